"""``optimize()``: an inference-ready copy of a model for fp32, bf16 or int8 on CPU, fp32, fp16 or bf16 on CUDA.

The steps, each measured to pay on this package's ResNets (see ``benchmarks/``): eval mode,
BatchNorm folded into the convolutions, channels-last memory layout (oneDNN's native
layout, no reorders between layers), then per precision bf16 weights and activations (AMX
on recent Xeons) or static int8 (PT2E), and ``torch.compile`` with freezing, which fuses
the elementwise tails (bias, residual add, ReLU) into the convolutions and pre-packs the
weights.  On CUDA the same folded channels-last network (cuDNN's tensor-core layout) runs in
fp32, fp16 or bf16 and is compiled with CUDA graphs, which replay all kernels of a call with one
launch.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import torch
from torch import nn

from ..errors import BadInput
from ..device import model_device
from ..quiet import quiet_third_party
from .prepare import DTYPES, Precision, int8_calibration, prepare
from ..cpu import cpu_info
from .table import BACKENDS, DEFAULT_BACKEND, PRECISIONS, check, resolve_backend


class InferenceModel(nn.Module):
    """Runs an optimised network on ordinary float NCHW input and returns float32 output.

    The input is moved to the network's device and converted to its layout (channels-last) and
    dtype, the output back to a contiguous float32 tensor on the input's device, so callers need
    not know how or where the model was optimised: a CPU batch given to a GPU model comes back on
    the CPU, a GPU batch stays on the GPU (no synchronisation, as benchmarks need).
    """

    def __init__(self, net: nn.Module, precision: str, compiled: bool, cuda_graphs: bool = False,
                 int8_mixed_bf16: bool = False) -> None:
        super().__init__()
        self.net = net
        self.precision = precision
        self.compiled = compiled
        self.cuda_graphs = cuda_graphs
        self.int8_mixed_bf16 = int8_mixed_bf16
        self.dtype = DTYPES[precision]
        self._compiled_for: set[tuple[int, ...]] = set()  # input shapes seen: a new one may (re)compile

    @property
    def device(self) -> torch.device:
        """Where the network's weights are (looked up per call, so ``.to(device)`` afterwards is honoured)."""
        return model_device(self.net)

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise BadInput(f"expected an NCHW batch (4 dims), got shape {tuple(x.shape)}")
        source = x.device
        x = x.to(self.device, dtype=self.dtype, memory_format=torch.channels_last, non_blocking=True)
        if not self.compiled:
            out = self.net(x)
        elif tuple(x.shape) not in self._compiled_for:  # compiles now: inductor's harmless warnings silenced
            with quiet_third_party():
                out = self._run_compiled(x)
            self._compiled_for.add(tuple(x.shape))
        else:
            out = self._run_compiled(x)
        # copy=: an fp32 output would otherwise be the CUDA graph's own buffer, rewritten by the next call.
        return out.to(source, torch.float32, memory_format=torch.contiguous_format, copy=self.cuda_graphs)

    def _run_compiled(self, x: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            if self.cuda_graphs:  # a new replay may overwrite the last one's outputs: copied out below
                torch.compiler.cudagraph_mark_step_begin()
            return self.net(x)
        # Compilation happens lazily, inside this call.  Freezing must be set in the global inductor
        # config (torch.compile's options= does not reach the constant folding that pre-packs int8 weights).
        from torch._inductor import config as inductor_config

        with inductor_config.patch(freezing=True), torch.autocast("cpu", torch.bfloat16,
                                                                   enabled=self.int8_mixed_bf16):
            return self.net(x)

    def extra_repr(self) -> str:
        mixed = ", int8_mixed_bf16=True" if self.int8_mixed_bf16 else ""
        return f"precision={self.precision}, compiled={self.compiled}, cuda_graphs={self.cuda_graphs}{mixed}"


def _example_batch(model: nn.Module, example_inputs: torch.Tensor | tuple | None) -> torch.Tensor:
    if isinstance(example_inputs, (tuple, list)):
        example_inputs = example_inputs[0]
    if example_inputs is not None:
        return example_inputs.detach()
    size = getattr(model, "input_size", (3, 224, 224))
    return torch.zeros(2, *size)


def optimize(
    model: nn.Module,
    precision: Precision = "fp32",
    example_inputs: torch.Tensor | tuple[torch.Tensor, ...] | None = None,
    calibration: Iterable[torch.Tensor] | None = None,
    compile: bool | None = None,
    cuda_graphs: bool | None = None,
    backend: str = DEFAULT_BACKEND,
) -> nn.Module:
    """An inference-ready copy of ``model`` on the model's device (the original is untouched).

    ``precision``: ``"fp32"`` (exact up to rounding), ``"bf16"`` (weights and activations),
    ``"fp16"`` (likewise; CUDA only) or ``"int8"`` (CPU only: static quantization, calibrated
    on ``calibration``, an iterable of NCHW float batches preprocessed like real inputs;
    without it on ``example_inputs``, with a warning).  ``compile``: use ``torch.compile``
    (inductor; freezing on the CPU); ``None`` (default) compiles: it pays for every precision in
    the README's measurements, and int8 needs it (only inductor lowers the quantized graph to int8 kernels).  A compiled model
    compiles on its first call and again for each new batch size (a static graph each, as fast
    as the first; past torch's recompile limit, 8 sizes, a new size runs uncompiled).  ``cuda_graphs`` (compiled CUDA models; ``None`` = on there):
    ``mode="reduce-overhead"``, one graph recorded per batch size seen.  ``backend``: ``"auto"`` (default:
    the fastest engine installed for this CPU and precision, by the measured table
    :data:`resnets.inference.table.FASTEST`; torch on a GPU) or an engine of
    :data:`resnets.inference.table.BACKENDS`: ``"torch"``, ``"onnxruntime"`` (CPU, fp32 or
    int8; ``pip install 'resnets[onnx]'``, see :mod:`resnets.inference.ort`) or ``"openvino"`` (CPU,
    fp32, bf16 or int8; ``pip install 'resnets[openvino]'``, see :mod:`resnets.inference.ov`).

    ``example_inputs``: a batch of the input shape (default: zeros of the model's ``input_size``).
    Returns a module (the torch backend: an :class:`InferenceModel`): float NCHW in, float32 out, on
    the caller's device.
    """
    device = model_device(model)
    options = {"compile": compile, "cuda_graphs": cuda_graphs}
    if backend == "auto" and any(value is not None for value in options.values()):
        backend = "torch"  # compile= and cuda_graphs= are the torch backend's options
    entry = check(resolve_backend(backend, precision, device), precision, device)
    foreign = [name for name, value in options.items() if value and name not in entry.options]
    if foreign:
        owners = [b.name for b in BACKENDS.values() if set(foreign) <= set(b.options)]
        raise BadInput(f"{' and '.join(n + '=' for n in foreign)} apply to backend={owners[0]!r}; {backend} "
                         "optimises the graph itself (leave them unset)")
    kept = {name: value for name, value in options.items() if name in entry.options}
    return entry.load().build(model, precision, _example_batch(model, example_inputs), calibration,
                              calibrate_on_example=example_inputs is not None, **kept)


def build(
    model: nn.Module,
    precision: Precision,
    example: torch.Tensor,
    calibration: Iterable[torch.Tensor] | None = None,
    calibrate_on_example: bool = True,
    compile: bool | None = None,
    cuda_graphs: bool | None = None,
) -> InferenceModel:
    """The torch backend of :func:`optimize`: the prepared network, compiled by inductor unless ``compile=False``."""
    compile = True if compile is None else compile
    if precision == "int8" and not compile:
        raise BadInput("int8 needs compile=True: only inductor lowers the quantized graph to int8 kernels")
    on_cuda = model_device(model).type == "cuda"
    # CUDA graphs pay most at small batches, where launching ~100 kernels one by one costs as much
    # as running them; a replay is never slower than those launches, so they stay on at large
    # batches too.  Their price is memory: each new batch size records a graph and keeps its buffers.
    cuda_graphs = (compile and on_cuda) if cuda_graphs is None else cuda_graphs
    if cuda_graphs and not (compile and on_cuda):
        raise BadInput("cuda_graphs needs compile=True and a model on a CUDA device "
                         f"(the model is on {model_device(model)})")
    if PRECISIONS[precision].needs_calibration:  # here, so that its warning names optimize()'s caller
        calibration = int8_calibration(calibration, example, calibrate_on_example)
    net = prepare(model, precision, example, calibration)
    if compile:
        # No freezing on CUDA: its gains on the CPU are oneDNN weight pre-packing and int8 lowering,
        # while cuDNN takes the folded channels-last weights as they are; and a frozen graph bypasses
        # inductor's on-disk FX graph cache, so every process would compile from scratch.
        # dynamic=False: one static graph per batch size. Left to itself, torch.compile turns the second batch
        # size into one dynamic-shape graph for every size, which runs slower (benchmarks/compiled_batch_sizes.py;
        # the README has the numbers).
        net = torch.compile(net, mode="reduce-overhead" if cuda_graphs else None, dynamic=False)
    if precision == "bf16" and not on_cuda and not cpu_info().native_bf16:
        warnings.warn(f"bf16 on a CPU without native bf16 (AVX-512 BF16 or AMX) is emulated and runs several times "
                      f"slower than fp32 here ({cpu_info().describe()}); use fp32 or int8", stacklevel=3)
    # On CPUs with native bf16, int8 runs torchao's "int8-mixed-bf16" recipe (the compiled int8 graph under bf16
    # autocast): the layers left in floating point (the 3-channel stem, max pooling, the residual tensors) move
    # half the bytes (the README's Fast inference has the measured gain).
    return InferenceModel(net, precision, bool(compile), bool(cuda_graphs),
                          int8_mixed_bf16=precision == "int8" and cpu_info().native_bf16)


def describe() -> dict[str, str]:
    """The engine's versions (for benchmark reports and cache keys)."""
    return {"torch": torch.__version__}
