"""Rebuild ``src/resnets/weights/timm_hub.json``, the catalogue of timm's ResNet-family Hub checkpoints.

Maintainers run it after upgrading timm (the ``dev`` extra installs it) or when timm publishes new results::

    python tools/timm_hub_catalogue.py RESULTS [--cite URL] [--out PATH]

``RESULTS`` is timm's ``results/results-imagenet.csv`` (github.com/huggingface/pytorch-image-models): a local file,
or an ``https://`` URL read with urllib on a connected machine. ``--cite`` is what the catalogue's ``source``
records for it (default: ``RESULTS`` itself; give the raw URL at a fixed commit, so the numbers can be traced).

What goes in: every tag of the installed ``timm.list_pretrained()`` whose architecture resnets builds, less the
names the resnets registry already holds (torchvision's ``*.tv_in1k`` files, which resnets fetches from
torchvision); for each, timm's ``pretrained_cfg`` (the fields :func:`resnets.weights.hub.entry_from_config` reads)
and, from the CSV's row for that tag at its own input size, top-1/top-5 with the crop and interpolation of that
measurement. A tag without such a row (the in21k and feature-only ones) is listed without metrics.

What is checked where: ``tests/test_timm_hub_catalogue.py`` rebuilds the file from the installed timm and compares
every tag and config byte for byte. The top-1/top-5 values cannot be checked there: the CSV ships neither with timm
nor with resnets, and the tests run offline, so the test feeds back the file's own numbers; only this script,
run on a fresh copy of the CSV, compares them with timm's published ones (through ``git diff`` of its output).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import urllib.request
from pathlib import Path
from typing import Any

import timm

from resnets import list_models
from resnets.weights.registry import WEIGHTS

OUT = Path(__file__).resolve().parents[1] / "src" / "resnets" / "weights" / "timm_hub.json"
# The pretrained_cfg fields a catalogue entry keeps, in the file's order; a field timm leaves unset is left out.
CFG_FIELDS = ("tag", "input_size", "test_input_size", "crop_pct", "test_crop_pct", "crop_mode", "interpolation",
              "mean", "std", "license")


def read_results(location: str) -> dict[tuple[str, int], dict[str, str]]:
    """timm's results CSV (a path or an https URL) as ``(model.tag, img_size) -> row``; the first row wins."""
    if location.startswith(("https://", "http://")):
        with urllib.request.urlopen(location, timeout=60) as answer:  # noqa: S310 - a maintainer's own URL
            text = answer.read().decode()
    else:
        text = Path(location).read_text()
    rows: dict[tuple[str, int], dict[str, str]] = {}
    for row in csv.DictReader(io.StringIO(text)):
        rows.setdefault((row["model"], int(row["img_size"])), row)
    return rows


def timm_tags() -> list[str]:
    """The timm tags the catalogue holds: architectures resnets builds, less names the registry already has."""
    ours = set(list_models())
    return sorted(n for n in timm.list_pretrained() if n.split(".", 1)[0] in ours and n not in WEIGHTS)


def config_of(name: str) -> dict[str, Any]:
    """What a timm repo's ``config.json`` says about ``name`` (as ``timm.models.save_for_hf`` writes it)."""
    cfg = timm.models.get_pretrained_cfg(name).to_dict()
    pretrained = {k: list(cfg[k]) if isinstance(cfg[k], tuple) else cfg[k] for k in CFG_FIELDS
                  if cfg.get(k) is not None}
    return {"architecture": cfg["architecture"], "num_classes": cfg["num_classes"], "pretrained_cfg": pretrained}


def entry_of(name: str, results: dict[tuple[str, int], dict[str, str]]) -> dict[str, Any]:
    """One catalogue entry: timm's config, and timm's measurement at the tag's own input size if published."""
    config = config_of(name)
    size = config["pretrained_cfg"]["input_size"][-1]
    row = results.get((name, size))
    if row is None:
        return {"config": config}
    measured = (f"ImageNet-1k val at {size}px, crop_pct {float(row['crop_pct']):.3f}, {row['interpolation']} "
                "(timm results/results-imagenet.csv)")
    return {"config": config, "metrics": {"top1": float(row["top1"]), "top5": float(row["top5"])},
            "metrics_data": measured}


def build(results: dict[tuple[str, int], dict[str, str]]) -> dict[str, dict[str, Any]]:
    """Every catalogued tag's entry, by name."""
    return {name: entry_of(name, results) for name in timm_tags()}


def source_note(cite: str) -> str:
    """The catalogue's ``source``: the timm release and the results file its numbers came from."""
    return (f"timm {timm.__version__}: tags from timm.list_pretrained() whose architecture resnets builds (less the "
            "torchvision files the registry has as *.tv_in1k), config from timm.models.get_pretrained_cfg; "
            f"top-1/top-5 from {cite}, the row at the tag's input size")


def render(weights: dict[str, dict[str, Any]], source: str) -> str:
    """The file's text: one compact line per tag, so that a rebuild's ``git diff`` shows each changed tag."""
    lines = [f"  {json.dumps(name)}: {json.dumps(item, separators=(',', ':'))}" for name, item in weights.items()]
    return "{\n" + f' "source": {json.dumps(source)},\n "weights": {{\n' + ",\n".join(lines) + "\n }\n}\n"


def main(argv: list[str] | None = None) -> int:
    """Write the catalogue and say how many tags have timm's numbers."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", help="timm's results-imagenet.csv: a local file or an https URL")
    p.add_argument("--cite", help="the results file's permanent URL, recorded as the source (default: RESULTS)")
    p.add_argument("--out", type=Path, default=OUT, help=f"where to write (default: {OUT})")
    args = p.parse_args(argv)
    weights = build(read_results(args.results))
    args.out.write_text(render(weights, source_note(args.cite or args.results)))
    unmeasured = [n for n, item in weights.items() if "metrics" not in item]
    print(f"wrote {args.out}: {len(weights)} tags, {len(weights) - len(unmeasured)} with timm's top-1; without: "
          + (", ".join(unmeasured) or "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
