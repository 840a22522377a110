"""Every file the package writes gets the mode ``open`` would give it under the process umask, whatever the
library that writes it does (safetensors 0.8 replaces the temporary file with a 0600 one of its own)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from test_train import cifar, tiny_config  # noqa: F401  (the module's fake CIFAR fixture)

from resnets.cli import main
from resnets.train import train

ROOT = Path(__file__).resolve().parents[1]
IMAGES = sorted((ROOT / "examples" / "images").glob("cifar10_*.jpg"))


@pytest.fixture(params=[0o022, 0o027])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def modes(folder: Path) -> dict[str, str]:
    """Each file under ``folder`` and its permission bits, as octal text."""
    return {str(p.relative_to(folder)): oct(stat.S_IMODE(p.stat().st_mode)) for p in folder.rglob("*") if p.is_file()}


def assert_umask_modes(folder: Path, mask: int) -> None:
    found = modes(folder)
    assert found, f"nothing written under {folder}"
    wrong = {name: mode for name, mode in found.items() if mode != oct(0o666 & ~mask)}
    assert not wrong, f"files not at {oct(0o666 & ~mask)} under umask {oct(mask)}: {wrong}"


@pytest.mark.slow
def test_train_convert_export_features_and_caches_honour_the_umask(cifar, tmp_path, umask):  # noqa: F811
    run = tmp_path / "run"
    train(tiny_config(cifar, run, epochs=1, cache_dir=str(tmp_path / "data-cache")))
    assert {"model.safetensors", "best.safetensors", "last.pt", "config.json"} <= set(modes(run))
    assert_umask_modes(run, umask)
    assert_umask_modes(tmp_path / "data-cache", umask)

    out = tmp_path / "out"
    assert main(["weights", "convert", str(run / "last.pt"), str(out / "converted.safetensors")]) == 0
    assert main(["export", "--weights", str(run / "model.safetensors"), "--format", "onnx",
                 "-o", str(out / "model.onnx")]) == 0
    for name in ("f.npz", "f.parquet"):
        assert main(["features", "--weights", str(run / "model.safetensors"), "--workers", "0", "--no-progress",
                     "-o", str(out / name), *map(str, IMAGES)]) == 0
    assert_umask_modes(out, umask)


def test_atomic_writes_honour_the_umask_even_when_the_writer_replaces_the_file(tmp_path, umask):
    from safetensors.torch import save_file
    import torch

    from resnets.atomic import atomic_path

    with atomic_path(tmp_path / "w.safetensors") as tmp:
        save_file({"x": torch.zeros(2)}, str(tmp))  # safetensors 0.8 writes a new file and renames it over tmp
    with atomic_path(tmp_path / "private") as tmp:
        tmp.write_text("x")
        os.chmod(tmp, 0o600)  # a writer that chose its own mode
    assert_umask_modes(tmp_path, umask)
