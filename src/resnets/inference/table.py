"""The one table of inference precisions and backends that ``optimize``, ``bench``, ``export`` and the tests read.

A **precision** is one :class:`Precision` entry (the dtype the torch backend computes in, the devices that run
it, the backends that support it, whether it calibrates, how far an export may differ from eager fp32).  A
**backend** is one :class:`Backend` entry naming the module under ``resnets.inference`` that implements it;
that module offers ``build(model, precision, example, calibration, calibrate_on_example, **options)``, which
returns an ``nn.Module`` taking and returning float NCHW tensors, and ``describe()``, the engine's versions.
Backend modules are imported on first use, so an engine that is not installed costs nothing until asked for.
The names alone, without torch, are ``resnets.choices.PRECISIONS`` and ``BACKENDS`` (the CLI's choices); a test
checks that they list the same entries in the same order.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

import torch

#: The device types of :class:`Precision` and :class:`Backend` entries, as error messages name them.
DEVICE_WORDS = {"cpu": "the CPU", "cuda": "a CUDA GPU"}


@dataclass(frozen=True)
class Precision:
    """One inference precision: what it computes in, where it runs and what it needs."""

    name: str
    #: Weights and activations of the torch backend (int8: the float graph it is quantized from).
    dtype: torch.dtype
    #: Device types that run it.
    devices: tuple[str, ...]
    #: Backends that support it, in the order ``resnets bench`` reports them.
    backends: tuple[str, ...]
    #: Whether it calibrates on images (``calibration=``, ``--calibration DIR``).
    needs_calibration: bool
    #: ``resnets export``'s default tolerance: max |exported - eager fp32| relative to max |eager fp32|.
    export_tolerance: float
    #: What to use instead on the devices that do not run it (ends an error message).
    elsewhere: str = ""


@dataclass(frozen=True)
class Backend:
    """One inference engine behind ``optimize(backend=name)``."""

    name: str
    #: Its module under ``resnets.inference`` (``build`` and ``describe``).
    module: str
    #: Device types it runs on.
    devices: tuple[str, ...]
    #: ``optimize()`` keyword options it takes besides the precision (the others must stay unset).
    options: tuple[str, ...] = ()
    #: The pip extra that installs its engine.
    extra: str | None = None

    @property
    def precisions(self) -> tuple[str, ...]:
        """The precisions it runs, in table order."""
        return tuple(p.name for p in PRECISIONS.values() if self.name in p.backends)

    def load(self) -> ModuleType:
        """Its module (imported now, on first use)."""
        return importlib.import_module(f"{__package__}.{self.module}")


PRECISIONS: dict[str, Precision] = {p.name: p for p in (
    Precision("fp32", torch.float32, ("cpu", "cuda"), ("torch", "onnxruntime", "openvino"), False, 1e-4),
    Precision("bf16", torch.bfloat16, ("cpu", "cuda"), ("torch", "openvino"), False, 5e-2),
    Precision("fp16", torch.float16, ("cuda",), ("torch",), False, 1e-2,
              elsewhere="on the CPU use precision bf16, which AVX-512/AMX CPUs run natively"),
    Precision("int8", torch.float32, ("cpu",), ("torch", "onnxruntime", "openvino"), True, 0.1,
              elsewhere="int8 quantization targets x86 CPUs; use fp16 or bf16 on a GPU"),
)}

BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend("torch", "optimize", ("cpu", "cuda"), options=("compile", "cuda_graphs")),
    Backend("onnxruntime", "ort", ("cpu",), extra="onnx"),
    Backend("openvino", "ov", ("cpu",), extra="openvino"),
)}
#: The backend of ``optimize()`` and of every command when none is named.
DEFAULT_BACKEND = "torch"


def precision(name: str) -> Precision:
    """The entry of precision ``name``; a ValueError listing the choices otherwise."""
    if name not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
    return PRECISIONS[name]


def backend(name: str) -> Backend:
    """The entry of backend ``name``; a ValueError listing the choices otherwise."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    return BACKENDS[name]


def check_device(name: str, device: torch.device | str) -> None:
    """Refuse precision ``name`` on a device type that does not run it, saying what to use there."""
    entry, device = precision(name), torch.device(device)
    if device.type not in entry.devices:
        where = " or ".join(DEVICE_WORDS.get(d, d) for d in entry.devices)
        raise ValueError(f"precision {name} needs {where} (the model is on {device})"
                         + (f"; {entry.elsewhere}" if entry.elsewhere else ""))


def check(backend_name: str, precision_name: str, device: torch.device | str) -> Backend:
    """The backend's entry, once it is known to run ``precision_name`` on ``device``; else a ValueError saying why."""
    entry, device = backend(backend_name), torch.device(device)
    precision(precision_name)
    if precision_name not in entry.precisions:
        others = [b for b in PRECISIONS[precision_name].backends if b != backend_name]
        raise ValueError(f"the {backend_name} backend runs {' and '.join(entry.precisions)}, not {precision_name!r} "
                         f"(use backend={others[0]!r} for it)")
    if device.type not in entry.devices:
        where = " or ".join(DEVICE_WORDS.get(d, d) for d in entry.devices)
        raise ValueError(f"the {backend_name} backend runs on {where}; the model is on {device} (move it to "
                         f"{where}, --device {' or '.join(entry.devices)} on the command line, or use backend='torch')")
    check_device(precision_name, device)
    return entry
