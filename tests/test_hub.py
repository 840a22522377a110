"""``weights="hf-hub:timm/..."`` (and timm's catalogued tags, ``weights="resnet50.a1_in1k"``): timm checkpoints with
random weights, saved by timm's own ``save_for_hf``, load equal to timm (outputs and preprocessing) from a Hub cache
the test writes by hand (a fresh process, ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE=1`` in its environment) and
through a Hub stand-in on 127.0.0.1 (huggingface_hub's real download path and cache); missing repos, files and
revisions, dropped connections and offline mode are each reported naming the repo, and a broken download leaves
nothing a later call would accept. Every entry point takes the names: Python, Keras-style constructors, the CLI,
the service's loader, the Ray model actor and a fine-tuning run."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import json
import math
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import unquote

import pytest
import torch
from PIL import Image

import resnets
from resnets.classes import imagenet_classes, imagenet_names
from resnets.cli import main
from resnets.errors import BadWeights, MissingExtra, UnknownName
from resnets.weights import DownloadError, OfflineError
from resnets.weights.hub import timm_catalogue

from test_timm_family import TOLERANCE, randomize, relative_error

timm = pytest.importorskip("timm")
constants = pytest.importorskip("huggingface_hub.constants")

COMMIT = "0123456789abcdef0123456789abcdef01234567"
IMAGE = Path(__file__).parent.parent / "examples" / "images" / "zebra.jpg"
RESOLVE = re.compile(r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<filename>.+)")


class Hub(http.server.ThreadingHTTPServer):
    """The part of the Hub's protocol ``hf_hub_download`` speaks: HEAD and GET of
    ``/{repo}/resolve/{revision}/{filename}`` answered with ``ETag``, ``X-Repo-Commit`` and ``Content-Length``,
    and 404s told apart by ``X-Error-Code``."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), HubHandler)
        self.repos: dict[str, dict[str, bytes]] = {}
        self.drop: set[str] = set()  # file names whose download hangs up half-way, and whose resumes fail
        self.plain = False  # answer like a web server that is not a Hub (a wrong HF_ENDPOINT): no X-Repo-Commit
        self.requests: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class HubHandler(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self.answer(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self.answer(body=True)

    def answer(self, body: bool) -> None:
        self.server.requests.append(f"{self.command} {self.path}")
        m = RESOLVE.fullmatch(unquote(self.path))
        files = self.server.repos.get(m["repo"]) if m else None
        if files is None:
            return self.refuse("RepoNotFound")
        if m["revision"] not in ("main", COMMIT):
            return self.refuse("RevisionNotFound")
        data = files.get(m["filename"])
        if data is None:
            return self.refuse("EntryNotFound")
        dropped = body and m["filename"] in self.server.drop
        if dropped and self.headers.get("Range"):
            return  # hang up without an answer: the resumes fail too
        self.send_response(200)
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        if not self.server.plain:
            self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data[: len(data) // 2] if dropped else data)

    def refuse(self, code: str) -> None:
        message = json.dumps({"error": code}).encode()
        self.send_response(404)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("Content-Length", str(len(message)))
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(message)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A Hub stand-in, huggingface_hub pointed at it (its settings are read at import: HF_ENDPOINT into
    ``constants.ENDPOINT`` and the URL template) with an empty cache, online."""
    server = Hub()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("RESNETS_OFFLINE", raising=False)
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def publish(hub: Hub, tag: str, folder: Path, safetensors: bool = True) -> torch.nn.Module:
    """timm's ``tag`` with random weights and statistics, uploaded as timm would (``save_for_hf``) to ``timm/tag``."""
    model = randomize(timm.create_model(tag, pretrained=False))
    timm.models.save_for_hf(model, folder / tag, safe_serialization=safetensors)
    hub.repos[f"timm/{tag}"] = {p.name: p.read_bytes() for p in (folder / tag).iterdir()}
    return model


def assert_like_timm(ours: torch.nn.Module, ref: torch.nn.Module) -> None:
    """The weights' preprocessing is timm's evaluation transform, and the outputs on a photo are timm's."""
    image = Image.open(IMAGE)
    config = timm.data.resolve_data_config({}, model=ref)
    expected = timm.data.create_transform(**config)(image)
    x = ours.pretrained_cfg.preprocessing(image)
    torch.testing.assert_close(x, expected, atol=1e-5, rtol=0)
    with torch.inference_mode():
        error = relative_error(ours.eval()(x[None]), ref(expected[None]))
    assert error < TOLERANCE


def cache_files(hub_cache: str) -> list[str]:
    return sorted(str(p.relative_to(hub_cache)) for p in Path(hub_cache).rglob("*") if p.is_file())


@pytest.mark.parametrize("tag, safetensors", [("resnet18d.ra2_in1k", True), ("resnetv2_18.ra4_e3600_r224_in1k", False)])
def test_hub_checkpoint_equals_timm_and_is_reused_offline(hub, tmp_path, monkeypatch, tag, safetensors):
    ref = publish(hub, tag, tmp_path, safetensors)
    model = resnets.create_model(weights=f"hf-hub:timm/{tag}")
    assert_like_timm(model, ref)
    entry = model.pretrained_cfg
    cfg = ref.pretrained_cfg
    assert (entry.model, entry.license, entry.classes) == (cfg["architecture"], cfg["license"], imagenet_names())
    assert entry.source.startswith(f"hf-hub:timm/{tag}@{COMMIT} ")
    assert entry.file_format == ("safetensors" if safetensors else "torch")
    assert entry.url == f"{hub.url}/timm/{tag}/resolve/{COMMIT}/{'model.safetensors' if safetensors else 'pytorch_model.bin'}"

    hub.requests.clear()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    again = resnets.create_model(weights=f"hf-hub:timm/{tag}@{COMMIT}")
    assert again.pretrained_cfg == entry and hub.requests == []
    torch.testing.assert_close(again.state_dict(), model.state_dict(), rtol=0, atol=0)


def test_labels_and_class_count_come_from_the_config(hub, tmp_path):
    ref = timm.create_model("resnet10t.c3_in1k", pretrained=False, num_classes=3)
    timm.models.save_for_hf(ref, tmp_path / "pets", model_config={"label_names": ["cat", "dog", "fox"]},
                            safe_serialization=True)
    hub.repos["someone/pets"] = {p.name: p.read_bytes() for p in (tmp_path / "pets").iterdir()}
    model = resnets.resnet10t(weights="hf-hub:someone/pets@main")
    assert model.pretrained_cfg.classes == ("cat", "dog", "fox") and model.num_classes == 3


def test_missing_repo_revision_files_and_foreign_architecture_name_the_repo(hub, tmp_path):
    with pytest.raises(UnknownName, match="hf-hub:timm/nothing.here: no such model repo"):
        resnets.create_model(weights="hf-hub:timm/nothing.here")
    publish(hub, "resnet10t.c3_in1k", tmp_path)
    with pytest.raises(UnknownName, match="hf-hub:timm/resnet10t.c3_in1k: the repo has no revision 'v9'"):
        resnets.create_model(weights="hf-hub:timm/resnet10t.c3_in1k@v9")
    with pytest.raises(BadWeights, match="holds a resnet10t, not a resnet50"):
        resnets.create_model("resnet50", weights="hf-hub:timm/resnet10t.c3_in1k")
    del hub.repos["timm/resnet10t.c3_in1k"]["model.safetensors"]
    with pytest.raises(BadWeights, match=f"hf-hub:timm/resnet10t.c3_in1k@{COMMIT} has no model.safetensors or "
                                         "pytorch_model.bin"):
        resnets.create_model(weights="hf-hub:timm/resnet10t.c3_in1k")
    hub.repos["timm/bare"] = {}
    with pytest.raises(BadWeights, match="hf-hub:timm/bare has no config.json"):
        resnets.create_model(weights="hf-hub:timm/bare")
    hub.repos["timm/vit"] = {"config.json": json.dumps({"architecture": "vit_base_patch16_224"}).encode()}
    with pytest.raises(UnknownName, match=f"hf-hub:timm/vit@{COMMIT}: its architecture 'vit_base_patch16_224' is not"):
        resnets.create_model(weights="hf-hub:timm/vit")
    with pytest.raises(UnknownName, match="expected hf-hub:ORG/NAME"):
        resnets.create_model(weights="hf-hub:resnet50")


def test_dropped_connection_is_named_and_caches_nothing(hub, tmp_path, monkeypatch):
    ref = publish(hub, "resnet10t.c3_in1k", tmp_path)
    hub.drop.add("model.safetensors")
    with pytest.raises(DownloadError, match="hf-hub:timm/resnet10t.c3_in1k@[0-9a-f]+: downloading model.safetensors"):
        resnets.create_model(weights="hf-hub:timm/resnet10t.c3_in1k")
    assert sum(r.startswith("GET") and "model.safetensors" in r for r in hub.requests) > 1  # it did try to resume
    left = cache_files(constants.HF_HUB_CACHE)
    assert not [f for f in left if "model.safetensors" in f or f.endswith(".incomplete")], left
    # Offline, the half file is not taken for the whole one.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OfflineError, match="hf-hub:timm/resnet10t.c3_in1k@.*HF_HUB_OFFLINE"):
        resnets.create_model(weights="hf-hub:timm/resnet10t.c3_in1k")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    hub.drop.clear()
    assert_like_timm(resnets.create_model(weights="hf-hub:timm/resnet10t.c3_in1k"), ref)


def test_offline_or_not_a_hub_without_cache_names_the_repo(hub, tmp_path, monkeypatch):
    publish(hub, "resnet10t.c3_in1k", tmp_path)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OfflineError, match="hf-hub:timm/resnet10t.c3_in1k: config.json is not in the Hugging Face "
                                           "cache .*HF_HUB_OFFLINE is set"):
        resnets.create_model(weights="hf-hub:timm/resnet10t.c3_in1k")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    hub.plain = True
    with pytest.raises(DownloadError, match="hf-hub:timm/resnet10t.c3_in1k: no usable answer from http://127.0.0.1"
                                            ".*not in the Hugging Face cache.*X-Repo-Commit"):
        resnets.create_model(weights="hf-hub:timm/resnet10t.c3_in1k")


def test_resnets_offline_keeps_hub_names_off_the_network_too(hub, tmp_path, monkeypatch):
    ref = publish(hub, "resnet10t.c3_in1k", tmp_path)
    monkeypatch.setenv("RESNETS_OFFLINE", "1")
    with pytest.raises(OfflineError, match="hf-hub:timm/resnet10t.c3_in1k: config.json is not in the Hugging Face "
                                           "cache .*RESNETS_OFFLINE is set"):
        resnets.create_model(weights="resnet10t.c3_in1k")
    assert hub.requests == []
    monkeypatch.delenv("RESNETS_OFFLINE")
    resnets.create_model(weights="resnet10t.c3_in1k")
    hub.requests.clear()
    monkeypatch.setenv("RESNETS_OFFLINE", "1")
    assert_like_timm(resnets.create_model(weights="resnet10t.c3_in1k"), ref)
    assert hub.requests == []


def test_a_hub_nobody_answers_serves_the_cached_repo_at_once(hub, tmp_path):
    """A Hub that cannot be reached (here: nothing listens on its port) is not asked again: the repo comes from the
    cache, as huggingface_hub's own fallback would give it."""
    ref = publish(hub, "resnet10t.c3_in1k", tmp_path)
    resnets.create_model(weights="hf-hub:timm/resnet10t.c3_in1k")
    hub.shutdown()
    hub.server_close()  # the port now refuses connections
    start = time.monotonic()
    model = resnets.create_model(weights="hf-hub:timm/resnet10t.c3_in1k")
    assert time.monotonic() - start < 5  # no retries (loading itself takes a second on a busy machine)
    assert_like_timm(model, ref)

def test_without_huggingface_hub_the_extra_is_named(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(MissingExtra, match=re.escape('pip install "resnets[hub]"')):
        resnets.create_model(weights="hf-hub:timm/resnet50.a1_in1k")
    assert main(["weights", "convert", "hf-hub:timm/resnet50.a1_in1k", "out.safetensors"]) != 0
    assert 'pip install "resnets[hub]"' in capsys.readouterr().err


def test_cli_convert_keeps_the_entry_and_predict_reads_the_hub_by_environment(hub, tmp_path, capsys):
    ref = publish(hub, "resnet10t.c3_in1k", tmp_path)
    name = "hf-hub:timm/resnet10t.c3_in1k"
    out = tmp_path / "converted.safetensors"
    assert main(["weights", "convert", name, str(out)]) == 0
    assert f"wrote {out} (resnet10t, {name})" in capsys.readouterr().out
    converted, original = resnets.create_model(weights=out), resnets.create_model(weights=name)
    assert converted.pretrained_cfg == dataclasses.replace(original.pretrained_cfg, url=None, file_format="safetensors")
    assert_like_timm(converted, ref)

    assert main(["predict", "--weights", str(out), "--workers", "0", "--json", str(IMAGE)]) == 0
    expected = json.loads(capsys.readouterr().out)
    # A fresh process reads HF_ENDPOINT and HF_HUB_CACHE from the environment (a new cache: a real download).
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(tmp_path / "env-cache"), "HF_HUB_OFFLINE": "0"}
    run = subprocess.run([sys.executable, "-m", "resnets", "predict", "--weights", name, "--workers", "0", "--json",
                          str(IMAGE)], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)["predictions"]
    assert [p["id"] for p in got] == [p["id"] for p in expected["predictions"]]
    assert [p["probability"] for p in got] == pytest.approx([p["probability"] for p in expected["predictions"]],
                                                            abs=2e-6)
    assert any("model.safetensors" in f for f in cache_files(env["HF_HUB_CACHE"]))


def test_catalogue_is_timms_own_tags_with_their_preprocessing():
    catalogue = timm_catalogue()
    assert len(catalogue) > 100 and sum("top1" in e.metrics for e in catalogue.values()) > 100
    published = set(timm.list_pretrained())
    for name, entry in catalogue.items():
        assert name in published and entry.model == name.split(".")[0] in resnets.list_models(), name
        cfg = timm.models.get_pretrained_cfg(name)
        assert cfg.hf_hub_id == f"timm/{name}" and entry.license == (cfg.license or entry.license), name
        data = timm.data.resolve_data_config({}, pretrained_cfg=cfg.to_dict())
        size = data["input_size"][-1]
        pre = entry.preprocessing
        assert (pre.crop_size, pre.resize_size, pre.interpolation) == (
            size, math.floor(size / data["crop_pct"]), data["interpolation"]), name
        assert (pre.mean, pre.std) == (data["mean"], data["std"]), name
        if entry.metrics:  # measured at the entry's own input size
            assert entry.metrics_data.startswith(f"ImageNet-1k val at {size}px") and 0 < entry.metrics["top1"] < 100


def test_catalogued_tag_by_short_name_and_in_the_list(hub, tmp_path, capsys):
    ref = publish(hub, "resnet10t.c3_in1k", tmp_path)
    listed = timm_catalogue()["resnet10t.c3_in1k"]
    assert main(["weights", "list", "--model", "resnet10t"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[2:] == [f"{listed.metrics['top1']:.2f}", "5,435,488", "-",
                                                                   "no", listed.license]
    model = resnets.create_model(weights="resnet10t.c3_in1k")
    assert_like_timm(model, ref)
    assert model.pretrained_cfg.name == "hf-hub:timm/resnet10t.c3_in1k"
    assert (model.pretrained_cfg.metrics, model.pretrained_cfg.metrics_data) == (listed.metrics, listed.metrics_data)
    assert main(["weights", "list"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    row = next(r for r in rows if r[0] == "resnet10t.c3_in1k")
    assert row[-2] == "yes" and row[-3] == "MB"  # now in the Hub cache, with its size
    imagenet = [float(r[2]) for r in rows if r[2] != "-" and "cifar" not in r[0]]
    assert imagenet == sorted(imagenet, reverse=True) and len(imagenet) > 100


def write_hub_cache(cache: Path, repo_id: str, folder: Path, commit: str = COMMIT) -> None:
    """huggingface_hub's cache layout, by hand: ``models--ORG--NAME/blobs/<hash>`` (git's sha1 of a small file,
    sha256 of an LFS one, as the Hub's ETags), ``snapshots/<commit>/<file>`` linked to them, ``refs/main``."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "blobs").mkdir(parents=True)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    for path in folder.iterdir():
        data = path.read_bytes()
        lfs = path.suffix in (".safetensors", ".bin")
        blob = hashlib.sha256(data).hexdigest() if lfs else hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        (repo / "blobs" / blob).write_bytes(data)
        (repo / "snapshots" / commit / path.name).symlink_to(Path("..", "..", "blobs", blob))
    (repo / "refs" / "main").write_text(commit)


OFFLINE_SCRIPT = """
import sys, torch
from PIL import Image
import resnets
from resnets.cli import main
name, image, out = sys.argv[1:]
model = resnets.create_model(weights=name).eval()
x = model.pretrained_cfg.preprocessing(Image.open(image))
with torch.inference_mode():
    torch.save({"x": x, "logits": model(x[None]), "source": model.pretrained_cfg.source}, out)
sys.exit(main(["predict", "--weights", name.removeprefix("hf-hub:timm/"), "--workers", "0", "--json", image]))
"""


def test_hand_written_cache_gives_a_fresh_offline_process_timms_outputs_and_preprocessing(tmp_path):
    tag = "resnet10t.c3_in1k"
    ref = randomize(timm.create_model(tag, pretrained=False)).eval()
    timm.models.save_for_hf(ref, tmp_path / tag, safe_serialization=True)
    assert sorted(p.name for p in (tmp_path / tag).iterdir()) == ["config.json", "model.safetensors"]
    write_hub_cache(tmp_path / "hf-cache", f"timm/{tag}", tmp_path / tag)
    # The real settings, read by huggingface_hub at import; an endpoint that refuses every connection.
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hf-cache"), "HF_HUB_OFFLINE": "1",
           "HF_ENDPOINT": "http://127.0.0.1:9"}
    out = tmp_path / "ours.pt"
    run = subprocess.run([sys.executable, "-c", OFFLINE_SCRIPT, f"hf-hub:timm/{tag}", str(IMAGE), str(out)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    ours = torch.load(out)
    assert ours["source"].startswith(f"hf-hub:timm/{tag}@{COMMIT} ")  # refs/main's commit
    config = timm.data.resolve_data_config({}, model=ref)
    expected = timm.data.create_transform(**config)(Image.open(IMAGE))
    torch.testing.assert_close(ours["x"], expected, atol=1e-5, rtol=0)
    with torch.inference_mode():
        logits = ref(expected[None])
    assert relative_error(ours["logits"], logits) < TOLERANCE
    top = logits.softmax(1)[0].topk(5)
    got = json.loads(run.stdout)["predictions"]  # resnets predict, by the catalogued short name
    assert [p["id"] for p in got] == [imagenet_classes()[i][0] for i in top.indices]
    assert [p["probability"] for p in got] == pytest.approx(top.values.tolist(), abs=1e-5)


def test_keras_constructors_take_hub_names_with_and_without_the_top(hub, tmp_path):
    ref = publish(hub, "resnet18.a1_in1k", tmp_path).eval()
    name = "hf-hub:timm/resnet18.a1_in1k"
    top, notop = resnets.ResNet18(weights=name).eval(), resnets.ResNet18(include_top=False, pooling="avg",
                                                                         weights=name).eval()
    assert top.pretrained_cfg.name == notop.pretrained_cfg.name == name
    x = top.pretrained_cfg.preprocessing(Image.open(IMAGE))[None]
    with torch.inference_mode():
        features = ref.forward_head(ref.forward_features(x), pre_logits=True)
        assert relative_error(top(x), ref(x).softmax(1)) < TOLERANCE  # Keras' default: softmax on top
        assert relative_error(notop(x), features) < TOLERANCE


def test_service_loader_and_ray_actor_take_hub_names(hub, tmp_path):
    """``resnets serve`` builds its model with ``load_inference``; each Ray model actor too, from the name."""
    from resnets.pipeline import load_inference
    from resnets.serve.models import Models

    ref = publish(hub, "resnet10t.c3_in1k", tmp_path).eval()
    name = "hf-hub:timm/resnet10t.c3_in1k"
    inf = load_inference(None, name)
    assert (inf.name, inf.classes, inf.weights) == ("resnet10t", imagenet_names(), name)
    assert_like_timm(inf.model, ref)
    assert Models(inf, inf.model).eager() is inf.model  # /v1/features and /v1/explain share it

    stages = pytest.importorskip("resnets.ray.stages")
    pa = pytest.importorskip("pyarrow")
    batch = stages.decode_batch(pa.table({"path": [str(IMAGE)]}), inf.preprocessing, "path", None, "predictions")
    actor = stages.ModelActor("predict", 3, {"model_name": None, "weights": name, "progress": False})
    got = actor(batch).column("predictions").to_pylist()[0]
    with torch.inference_mode():
        best = ref(inf.preprocessing(Image.open(IMAGE))[None]).softmax(1)[0].topk(3)
    assert [p["id"] for p in got] == [imagenet_classes()[i][0] for i in best.indices]
    assert [p["probability"] for p in got] == pytest.approx(best.values.tolist(), abs=1e-5)


def test_fine_tuning_starts_from_a_hub_checkpoint(hub, tmp_path, capsys):
    ref = publish(hub, "resnet10t.c3_in1k", tmp_path)
    data, run = tmp_path / "data", tmp_path / "run"
    for split, n in (("train", 4), ("test", 1)):
        for c, cls in enumerate(("cat", "dog")):
            (data / split / cls).mkdir(parents=True)
            for i in range(n):
                pixels = torch.randint(0, 150, (40, 52, 3), dtype=torch.uint8)
                pixels[..., c] += 100
                Image.fromarray(pixels.numpy()).save(data / split / cls / f"{i}.png")
    name = "hf-hub:timm/resnet10t.c3_in1k"
    assert main(["train", "--model", "resnet10t", "--weights", name, "--data", str(data), "--recipe", "finetune",
                 "--precision", "fp32", "--max-steps", "1", "--batch-size", "4", "--lr", "1e-9", "--image-size",
                 "32", "--out", str(run), "--threads", "1", "--no-progress", "--cache-dir",
                 str(tmp_path / "data-cache")]) == 0
    model = resnets.create_model(weights=run / "model.safetensors")
    assert model.pretrained_cfg.classes == ("cat", "dog") and f"from weights {name}" in model.pretrained_cfg.source
    trained, start = model.state_dict(), ref.state_dict()
    for key in (k for k in trained if k.endswith("weight") and not k.startswith("fc.")):
        torch.testing.assert_close(trained[key], start[key], atol=1e-6, rtol=0)  # one step at lr 1e-9
