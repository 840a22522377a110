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
import importlib.util
from dataclasses import dataclass
from types import ModuleType

import torch

from ..errors import BadInput, UnknownName
from ..cpu import cpu_info

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
    #: The modules its engine needs, and those it needs besides for precisions that calibrate (int8).
    requires: tuple[str, ...] = ()
    calibration_requires: tuple[str, ...] = ()
    #: The pip extra of ``calibration_requires``, where ``extra`` does not install them.
    calibration_extra: str | None = None
    #: Precisions it runs only where the CPU has them natively (OpenVINO refuses emulated bf16).
    native_only: tuple[str, ...] = ()

    @property
    def precisions(self) -> tuple[str, ...]:
        """The precisions it runs, in table order."""
        return tuple(p.name for p in PRECISIONS.values() if self.name in p.backends)

    def extras(self, precision_name: str) -> tuple[str, ...]:
        """The pip extras that install what it needs to run ``precision_name``."""
        calibrates = precision(precision_name).needs_calibration
        return tuple(e for e in dict.fromkeys((self.extra, self.calibration_extra if calibrates else None)) if e)

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
    Backend("torch", "optimize", ("cpu", "cuda"), options=("compile", "cuda_graphs"),
            calibration_requires=("torchao",), calibration_extra="int8"),
    Backend("onnxruntime", "ort", ("cpu",), extra="onnx", requires=("onnx", "onnxscript", "onnxruntime")),
    Backend("openvino", "ov", ("cpu",), extra="openvino", requires=("openvino",), calibration_requires=("nncf",),
            native_only=("bf16",)),
)}
#: The backend name that picks, per precision, the fastest engine installed for this CPU (:func:`choose_backend`).
AUTO = "auto"
#: The backend of ``optimize()`` when none is named.
DEFAULT_BACKEND = AUTO


@dataclass(frozen=True)
class Measured:
    """The CPU backends of one CPU kind (:data:`resnets.cpu.KINDS`), fastest first per precision, and where
    that order comes from: ``resnets bench`` JSON reports under ``benchmarks/`` (``files``; a test checks the order
    against them) and what else (``source``)."""

    order: dict[str, tuple[str, ...]]
    source: str
    files: tuple[str, ...] = ()


#: What ``backend="auto"`` picks on the CPU: the first backend of the CPU kind's order that is installed and runs
#: the precision here.  The orders rank each backend by the mean of its batch-1 and batch-16 speed-ups over
#: torchvision eager fp32 (ResNet-50, 2 threads, one interleaved ``resnets bench`` run per file; a service answers
#: single images, a folder job runs batches). A kind nobody measured borrows the nearest measured kind's order.
FASTEST: dict[str, Measured] = {
    "amx": Measured(
        {"fp32": ("onnxruntime", "openvino", "torch"), "bf16": ("openvino", "torch"),
         "int8": ("openvino", "torch", "onnxruntime")},
        "Xeon with AMX; OpenVINO not in that run: issue 24's run on such a machine had torch at 84% of OpenVINO in "
        "bf16 and 53% in int8; OpenVINO fp32 not measured there",
        ("benchmarks/results/resnet50-idle-run3.json",)),
    "avx512-bf16": Measured(
        {"fp32": ("openvino", "onnxruntime", "torch"), "bf16": ("openvino", "torch"),
         "int8": ("openvino", "onnxruntime", "torch")},
        "AMD EPYC with AVX-512 BF16 and VNNI, no AMX",
        ("benchmarks/results/resnet50-openvino-shared.json",)),
    "avx512": Measured(
        {"fp32": ("openvino", "onnxruntime", "torch"), "bf16": ("torch",),
         "int8": ("openvino", "onnxruntime", "torch")},
        "AVX-512 without BF16: not measured; avx512-bf16's order for fp32 and int8; bf16 is emulated there, "
        "which only torch runs"),
    "avx2": Measured(
        {"fp32": ("openvino", "onnxruntime", "torch"), "bf16": ("torch",),
         "int8": ("openvino", "onnxruntime", "torch")},
        "AMD EPYC with AVX2 only (no AVX-512, VNNI or AMX); bf16 is emulated there (torch 0.13x of eager fp32), "
        "which only torch runs",
        ("benchmarks/results/resnet50-avx2-backends.json", "benchmarks/results/resnet50-avx2-backends-run2.json",
         "benchmarks/results/resnet50-avx2-bf16.json")),
    "other": Measured(
        {"fp32": ("torch", "onnxruntime", "openvino"), "bf16": ("torch",), "int8": ("torch", "onnxruntime", "openvino")},
        "not an x86 CPU with AVX2: not measured; torch first"),
}


def precision(name: str) -> Precision:
    """The entry of precision ``name``; a ValueError listing the choices otherwise."""
    if name not in PRECISIONS:
        raise UnknownName(f"precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
    return PRECISIONS[name]


def backend(name: str) -> Backend:
    """The entry of backend ``name``; a ValueError listing the choices otherwise."""
    if name not in BACKENDS:
        raise UnknownName(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    return BACKENDS[name]


def check_device(name: str, device: torch.device | str) -> None:
    """Refuse precision ``name`` on a device type that does not run it, saying what to use there."""
    entry, device = precision(name), torch.device(device)
    if device.type not in entry.devices:
        where = " or ".join(DEVICE_WORDS.get(d, d) for d in entry.devices)
        raise BadInput(f"precision {name} needs {where} (the model is on {device})"
                         + (f"; {entry.elsewhere}" if entry.elsewhere else ""))


def check(backend_name: str, precision_name: str, device: torch.device | str) -> Backend:
    """The backend's entry, once it is known to run ``precision_name`` on ``device``; else a ValueError saying why."""
    entry, device = backend(backend_name), torch.device(device)
    precision(precision_name)
    if precision_name not in entry.precisions:
        others = [b for b in PRECISIONS[precision_name].backends if b != backend_name]
        raise BadInput(f"the {backend_name} backend runs {' and '.join(entry.precisions)}, not {precision_name!r} "
                         f"(use backend={others[0]!r} for it)")
    if device.type not in entry.devices:
        where = " or ".join(DEVICE_WORDS.get(d, d) for d in entry.devices)
        raise BadInput(f"the {backend_name} backend runs on {where}; the model is on {device} (move it to "
                         f"{where}, --device {' or '.join(entry.devices)} on the command line, or use backend='torch')")
    check_device(precision_name, device)
    return entry


def installed(name: str, precision_name: str) -> bool:
    """Whether the modules backend ``name`` needs for ``precision_name`` are importable (nothing is imported)."""
    entry = backend(name)
    needed = entry.requires + (entry.calibration_requires if precision(precision_name).needs_calibration else ())
    return all(importlib.util.find_spec(module) is not None for module in needed)


def not_here(name: str, precision_name: str, device: torch.device | str) -> str | None:
    """Why backend ``name`` cannot run ``precision_name`` on ``device`` here, or ``None`` if it can."""
    try:
        check(name, precision_name, device)
    except ValueError as e:
        return str(e)
    if torch.device(device).type == "cpu" and precision_name in backend(name).native_only and not cpu_info().native_bf16:
        return (f"the {name} backend runs {precision_name} only on CPUs with native bf16 (AVX-512 BF16 or AMX); "
                f"this one has none: {cpu_info().describe()}")
    return None


def runs_natively(precision_name: str, device: torch.device | str) -> bool:
    """Whether ``device`` computes ``precision_name`` in hardware: every precision the device runs, but bf16 on a CPU
    without AVX-512 BF16 or AMX (emulated there, slower than fp32)."""
    device = torch.device(device)
    if device.type not in precision(precision_name).devices:
        return False
    return precision_name != "bf16" or device.type != "cpu" or cpu_info().native_bf16


@dataclass(frozen=True)
class Choice:
    """The backend ``auto`` resolved to, and why (``resnets bench`` and ``--verbose`` print it)."""

    backend: str
    reason: str


def choose_backend(precision_name: str, device: torch.device | str = "cpu") -> Choice:
    """The fastest backend installed that runs ``precision_name`` on ``device``, by :data:`FASTEST` for this CPU's
    kind; torch on a GPU (the only engine there)."""
    precision(precision_name)
    device = torch.device(device)
    if device.type != "cpu":
        return Choice("torch", f"on {DEVICE_WORDS.get(device.type, device.type)} torch is the only backend")
    cpu = cpu_info()
    order = FASTEST[cpu.kind].order.get(precision_name, ("torch",))
    skipped = []
    for name in order:
        if not_here(name, precision_name, device) is not None:
            skipped.append(f"{name} cannot run it here")
        elif not installed(name, precision_name):
            extras = ",".join(BACKENDS[name].extras(precision_name))
            skipped.append(f"{name} is not installed: pip install 'resnets[{extras}]'")
        else:
            return Choice(name, f"fastest {precision_name} backend installed, of {' > '.join(order)} as measured on "
                                f"{cpu.kind} CPUs" + (f" ({'; '.join(skipped)})" if skipped else "")
                                + f"; this CPU: {cpu.describe()}")
    return Choice("torch", f"none of {', '.join(order)} runs {precision_name} here ({'; '.join(skipped)}); "
                           f"this CPU: {cpu.describe()}")


def resolve_backend(name: str, precision_name: str, device: torch.device | str = "cpu") -> str:
    """``name`` itself, or for ``"auto"`` the backend :func:`choose_backend` picks."""
    return choose_backend(precision_name, device).backend if name == AUTO else backend(name).name
