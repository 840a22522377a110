"""``src/resnets/weights/timm_hub.json`` against the installed timm, and ``tools/timm_hub_catalogue.py`` that writes it.

Every catalogued tag is one timm publishes, with timm's own architecture, class count and evaluation settings;
rebuilding the file from timm gives it back byte for byte. The top-1/top-5 values come from timm's
``results-imagenet.csv``, which is not installed (see the tool's docstring): the rebuild is fed the file's own
numbers, so it checks which row each value is read from and how, not the values themselves.
"""

from __future__ import annotations

import csv
import functools
import http.server
import importlib.util
import json
import re
import threading
from pathlib import Path
from types import ModuleType

import pytest

timm = pytest.importorskip("timm")

ROOT = Path(__file__).resolve().parents[1]
CATALOGUE = ROOT / "src" / "resnets" / "weights" / "timm_hub.json"
MEASURED = re.compile(r"ImageNet-1k val at (\d+)px, crop_pct ([\d.]+), (\w+) \(timm results/results-imagenet\.csv\)")
COLUMNS = ("model", "img_size", "top1", "top1_err", "top5", "top5_err", "param_count", "crop_pct", "interpolation")


@functools.cache
def tool() -> ModuleType:
    """``tools/timm_hub_catalogue.py`` (a script, not a package module)."""
    spec = importlib.util.spec_from_file_location("timm_hub_catalogue", ROOT / "tools" / "timm_hub_catalogue.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_entry_is_a_timm_tag_with_timms_pretrained_cfg():
    published = set(timm.list_pretrained())
    weights = json.loads(CATALOGUE.read_text())["weights"]
    assert len(weights) > 100
    for name, item in weights.items():
        assert name in published, f"{name}: not in timm.list_pretrained() of timm {timm.__version__}"
        cfg = timm.models.get_pretrained_cfg(name)
        config = item["config"]
        assert (config["architecture"], config["num_classes"]) == (cfg.architecture, cfg.num_classes), name
        assert cfg.hf_hub_id == f"timm/{name}", name
        ours = config["pretrained_cfg"]
        for field in ("mean", "std", "input_size", "crop_pct", "interpolation", "crop_mode", "tag",
                      "test_input_size", "test_crop_pct"):
            value = getattr(cfg, field)
            assert ours.get(field) == (list(value) if isinstance(value, tuple) else value), (name, field)
        assert ours.get("license") == cfg.license, name


def write_results(path: Path) -> None:
    """A results CSV in timm's columns holding the catalogue's own numbers at each tag's size, plus rows the
    tool must pass over: the same tag at another size, and a model resnets does not build."""
    weights = json.loads(CATALOGUE.read_text())["weights"]
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(COLUMNS)
        out.writerow(["vit_base_patch16_224.augreg_in1k", 224, 79.1, 20.9, 94.1, 5.9, "86.57", "0.900", "bicubic"])
        for name, item in weights.items():
            if "metrics" in item:
                size, crop_pct, interpolation = MEASURED.fullmatch(item["metrics_data"]).groups()
                top1, top5 = item["metrics"]["top1"], item["metrics"]["top5"]
                out.writerow([name, int(size) + 64, 1.0, 99.0, 2.0, 98.0, "1.00", "1.000", "bicubic"])
                out.writerow([name, size, f"{top1:.3f}", "0", f"{top5:.3f}", "0", "1.00", crop_pct, interpolation])


def test_the_tool_rebuilds_the_file_from_timm_byte_for_byte(tmp_path, capsys):
    write_results(tmp_path / "results-imagenet.csv")
    committed = CATALOGUE.read_text()
    out = tmp_path / "timm_hub.json"
    assert tool().main([str(tmp_path / "results-imagenet.csv"), "--cite", "URL", "--out", str(out)]) == 0
    weights = json.loads(committed)["weights"]
    measured = sum("metrics" in item for item in weights.values())
    assert f"{len(weights)} tags, {measured} with timm's top-1" in capsys.readouterr().out
    rebuilt = out.read_text()
    assert json.loads(rebuilt)["source"].startswith(f"timm {timm.__version__}: ")
    # The same text but for the timm release and the results file named in "source".
    source = json.dumps(json.loads(committed)["source"])
    assert re.sub(r'"source": ".*",', lambda _: f'"source": {source},', rebuilt, count=1) == committed, (
        "timm_hub.json is not what the installed timm says: run tools/timm_hub_catalogue.py and review the diff")


def test_the_tool_reads_the_results_file_from_a_url(tmp_path):
    write_results(tmp_path / "results-imagenet.csv")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/results-imagenet.csv"
        assert tool().read_results(url) == tool().read_results(str(tmp_path / "results-imagenet.csv"))
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
