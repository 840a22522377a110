"""Export a model to ONNX or a ``torch.export`` program, with a dynamic batch size, and check the file.

:func:`export_model` is the whole job (``resnets export`` calls it): prepare the network in a precision, write
the file with the weights' description, run the saved file (onnxruntime, or ``torch.export.load``) on a batch of
a size other than the one exported with, so a batch size baked into the graph is caught too, and remove a file
that fails its check.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..atomic import atomic_path
from ..choices import FORMATS
from ..errors import BadInput, ExportMismatch, MissingExtra
from ..quiet import quiet_third_party
from ..weights.entry import META_KEY, WeightsEntry
from .graph import export_dynamic_batch
from .prepare import DTYPES, prepare
from .table import precision as precision_entry

# ONNX opset 18: the dynamo exporter's native opset, run by every onnxruntime since 1.14.
ONNX_OPSET = 18


@dataclass(frozen=True)
class ExportCheck:
    """How a written file compares with eager fp32: ``diff`` = max |exported - eager| over a batch of
    ``checked`` inputs, ``scale`` = max |eager|, accepted while ``diff <= tolerance * scale``."""

    path: Path
    format: str
    precision: str
    diff: float
    scale: float
    tolerance: float
    checked: int

    @property
    def relative(self) -> float:
        return self.diff / max(self.scale, 1e-12)


def export_model(model: nn.Module, path: str | os.PathLike, format: str = "onnx", precision: str = "fp32",
                 calibration: Sequence[torch.Tensor] | None = None, input_size: int | None = None,
                 tolerance: float | None = None) -> ExportCheck:
    """Write ``model`` (eval mode, fp32 weights) to ``path`` as ``format`` (``"onnx"`` or ``"exported-program"``)
    in ``precision``, with its ``pretrained_cfg`` inside, and check the file against eager fp32.

    ``calibration``: preprocessed NCHW batches for int8 (they also make the check's inputs: int8 scales fit real
    images, not noise). ``tolerance``: the largest ``diff / scale`` accepted (default: the precision's, from
    :mod:`resnets.inference.table`). A file over it is removed and :class:`~resnets.errors.ExportMismatch` raised,
    so no file that failed its check is left where one is expected.
    """
    entry = precision_entry(precision)
    if format not in FORMATS:
        raise BadInput(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if format == "onnx" and precision != "fp32":
        raise BadInput("ONNX export is fp32 only; use format='exported-program' for bf16 or int8")
    if calibration and not entry.needs_calibration:
        raise BadInput(f"calibration= only applies to precisions that calibrate (not {precision})")
    if Path(path).is_dir():
        raise BadInput(f"{path} is a folder; give the file to write, e.g. {Path(path) / 'model.onnx'}")
    if tolerance is not None and tolerance < 0:
        raise BadInput(f"tolerance must be >= 0, got {tolerance:g}")
    if input_size is not None and input_size < 32:
        raise BadInput(f"input_size must be at least 32 (the networks downsample 32x), got {input_size}")
    size = input_size or model.input_size[-1]
    example = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    net = prepare(model, precision, example, calibration)
    info = getattr(model, "pretrained_cfg", None)
    if format == "onnx":
        export_onnx(net, path, example, info)
    else:
        export_program(net, path, example.to(DTYPES[precision]), info)
    check = calibration[0][:3] if calibration else torch.randn(3, 3, size, size,
                                                               generator=torch.Generator().manual_seed(1))
    diff, scale = max_abs_diff(path, format, model, check)
    result = ExportCheck(Path(path), format, precision, diff, scale,
                         entry.export_tolerance if tolerance is None else tolerance, len(check))
    if diff > result.tolerance * max(scale, 1e-12):
        Path(path).unlink(missing_ok=True)
        raise ExportMismatch(f"{path} differs from eager PyTorch by more than the tolerance ({result.relative:.3g} "
                             f"relative, tolerance {result.tolerance:g}); the file was removed")
    return result


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
    # Into memory first: torch's zip writer, given a path on a full disk, fails once and then aborts the process
    # when it is freed (std::terminate); a Python write fails with ENOSPC and nothing else.
    buffer = io.BytesIO()
    with quiet_third_party():
        torch.export.save(program, buffer, extra_files=extra)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())
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
        raise ExportMismatch(f"{path}: output shape {tuple(got.shape)} differs from eager {tuple(expected.shape)}")
    return (got - expected).abs().max().item(), expected.abs().max().item()
