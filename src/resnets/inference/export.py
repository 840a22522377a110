"""Export a model to ONNX or a ``torch.export`` program, with a dynamic batch size, and check the file.

The check runs the saved file (onnxruntime, or ``torch.export.load``) on a batch of a size
other than the one exported with, so a batch size baked into the graph is caught too.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..atomic import atomic_path
from ..errors import MissingExtra
from ..quiet import quiet_third_party
from ..weights.entry import META_KEY, WeightsEntry

# ONNX opset 18: the dynamo exporter's native opset, run by every onnxruntime since 1.14.
ONNX_OPSET = 18


def export_dynamic_batch(model: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """``torch.export`` with a dynamic batch dimension, so one graph serves every batch size."""
    if len(example) < 2:  # export would specialise a batch of 1 into the graph
        example = example[:1].expand(2, *example.shape[1:]).contiguous(memory_format=torch.channels_last)
    batch = torch.export.Dim("batch", min=1, max=4096)
    return torch.export.export(model, (example,), dynamic_shapes=({0: batch},))


def _require_onnx(run: bool = True):
    """onnxruntime (``run``: to check or run a file; writing one needs only onnx and onnxscript), or an
    ImportError naming the extra."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
        if not run:
            return None
        import onnxruntime
    except ImportError as e:
        raise MissingExtra(f"ONNX export needs onnx, onnxscript and onnxruntime ({e.name} is missing): "
                          "pip install 'resnets[onnx]'") from e
    return onnxruntime


def export_onnx(model: nn.Module, path: str | os.PathLike, example: torch.Tensor,
                entry: WeightsEntry | None = None) -> Path:
    """Write ``model`` (eval mode, float32) as ONNX with input ``images`` and a dynamic batch size.

    ``entry`` (the weights' description: classes, preprocessing...) goes into the model's metadata.
    """
    _require_onnx(run=False)
    import onnx

    path = Path(path)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with quiet_third_party():
        program = torch.onnx.export(
            model, (example,), dynamo=True, opset_version=ONNX_OPSET, input_names=["images"],
            output_names=["output"], dynamic_shapes=({0: batch},), external_data=False, verbose=False,
        )
    with atomic_path(path) as tmp:
        program.save(str(tmp))
        if entry is not None:
            proto = onnx.load(str(tmp))
            onnx.helper.set_model_props(proto, {META_KEY: entry.to_json()})
            onnx.save(proto, str(tmp))
    return path


def export_program(model: nn.Module, path: str | os.PathLike, example: torch.Tensor,
                   entry: WeightsEntry | None = None) -> Path:
    """Write ``model`` as a ``torch.export`` program (``.pt2``) with a dynamic batch size (and ``entry``)."""
    path = Path(path)
    program = export_dynamic_batch(model, example)
    extra = {META_KEY: entry.to_json()} if entry is not None else None
    with atomic_path(path) as tmp, quiet_third_party():
        torch.export.save(program, tmp, extra_files=extra)
    return path


def exported_entry(path: str | os.PathLike, fmt: str) -> WeightsEntry | None:
    """The weights description an exported file carries (classes, preprocessing...), or None."""
    if fmt == "onnx":
        import onnx

        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        text = props.get(META_KEY)
    else:
        extra = {META_KEY: ""}
        torch.export.load(str(path), extra_files=extra)
        text = extra[META_KEY] or None
    return WeightsEntry.from_json(text) if text else None


def run_exported(path: str | os.PathLike, x: torch.Tensor, fmt: str) -> torch.Tensor:
    """Outputs of an exported file on ``x``: onnxruntime for ONNX, ``torch.export.load`` otherwise."""
    if fmt == "onnx":
        ort = _require_onnx()
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return torch.from_numpy(session.run(None, {name: x.float().numpy()})[0])
    program = torch.export.load(str(path))
    dtype = next((p.dtype for p in program.parameters()), torch.float32)
    with torch.no_grad():
        return program.module()(x.to(dtype).contiguous(memory_format=torch.channels_last)).float()


def max_abs_diff(path: str | os.PathLike, fmt: str, reference: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """Max abs difference between the exported file and ``reference`` (eager) on ``x``, and max |reference|."""
    with torch.no_grad():
        expected = reference.eval()(x).float()
    got = run_exported(path, x, fmt)
    if got.shape != expected.shape:
        raise ValueError(f"{path}: output shape {tuple(got.shape)} differs from eager {tuple(expected.shape)}")
    return (got - expected).abs().max().item(), expected.abs().max().item()
