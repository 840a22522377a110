"""Measure inference speed fairly on a shared machine: interleaved rounds, ratios per round.

Other processes make absolute timings on a shared CPU swing by several times within minutes.  Each
round therefore calls the baseline and every candidate once, back to back, and a mode's
speed-up is the median over rounds of ``baseline time / mode time``: load that comes and
goes hits both sides of each ratio alike.  On a GPU each timed call is bracketed by
``torch.cuda.synchronize()``, so that a time covers the kernels, not just their launch.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from ..errors import BadInput
from ..cpu import cpu_info
from ..device import model_device


@dataclass
class BenchResult:
    """One mode at one batch size: throughput, latency per call and speed-up over the baseline."""

    mode: str
    batch: int
    images_per_s: float
    latency_ms_median: float
    latency_ms_p90: float
    ratio: float | None = None
    note: str = ""
    of_model_only: float | None = None  # end-to-end: fraction of the model-only throughput


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-quantile (0..1) of ``values``, linearly interpolated."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def interleaved_times(fns: dict[str, Callable[[], object]], runs: int, warmup: int = 2,
                      device: torch.device | str = "cpu") -> dict[str, list[float]]:
    """Seconds per call of each function, ``runs`` rounds that call every function once in turn.

    On a CUDA ``device`` the GPU is synchronised before and after each call: CUDA calls return once
    their kernels are queued, and a time must neither include the previous call's work nor miss its own.
    """
    device = torch.device(device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
    with torch.inference_mode():
        for fn in fns.values():
            for _ in range(warmup):
                fn()
        times: dict[str, list[float]] = {name: [] for name in fns}
        for _ in range(runs):
            for name, fn in fns.items():
                if sync:
                    sync()
                start = time.perf_counter()
                fn()
                if sync:
                    sync()
                times[name].append(time.perf_counter() - start)
    return times


@runtime_checkable
class Runner(Protocol):
    """A mode that feeds its engine itself (an engine used directly): ``images_per_call`` images in
    ``requests_per_call`` requests per call, the engine's own request latencies in ``latencies_ms``."""

    images_per_call: int
    requests_per_call: int
    latencies_ms: list[float]

    def __call__(self) -> None: ...

    def describe(self) -> str: ...


def compare(
    models: dict[str, nn.Module | Runner],
    batch: torch.Tensor,
    baseline: str | None,
    runs: int,
    warmup: int = 2,
) -> list[BenchResult]:
    """Benchmark ``models`` (name -> module called on ``batch``, or a :class:`Runner` holding its own input)
    on the batch's device; ratios are of time per image, against ``models[baseline]``."""
    n = len(batch)
    fns: dict[str, Callable[[], object]] = {}
    images: dict[str, int] = {}
    for name, m in models.items():
        runner = isinstance(m, Runner)
        fns[name] = m if runner else (lambda m=m: m(batch))
        images[name] = m.images_per_call if runner else n
    times = interleaved_times(fns, runs, warmup, batch.device)
    results = []
    for name, ts in times.items():
        ratio = None
        if baseline is not None:
            ratio = statistics.median((b / images[baseline]) / (t / images[name]) for b, t in zip(times[baseline], ts))
        median = statistics.median(ts)
        m = models[name]
        if isinstance(m, Runner):  # the engine's request latencies over the timed calls
            latencies = [ms / 1e3 for ms in m.latencies_ms[-runs * m.requests_per_call:]]
            result = BenchResult(name, n, images[name] / median, 1e3 * statistics.median(latencies),
                                 1e3 * percentile(latencies, 0.9), ratio, m.describe())
        else:
            result = BenchResult(name, n, n / median, 1e3 * median, 1e3 * percentile(ts, 0.9), ratio)
        results.append(result)
    return results


def end_to_end(
    model: nn.Module,
    folder: str | os.PathLike,
    batch_size: int,
    input_size: int,
    workers: int,
    mode: str,
    min_batches: int = 1,
    fast_decode: bool = False,
) -> BenchResult:
    """Throughput of JPEG decode + resize + crop + inference over the images in ``folder``.

    DataLoader workers decode the next batches while the model runs, as ``resnets predict``
    does.  The first batch (model warm-up, compilation) is not timed; a short last batch is
    dropped so a compiled model is not recompiled for it.  The folder is read as many times as it
    takes to time ``min_batches`` batches: a few batches last well under a second, and with the
    workers' start and the prefetch queue filling during the warm-up they measure the start, not the
    steady state.
    ``fast_decode``: large JPEGs decoded at a reduced scale, as ``resnets predict --fast-decode``.
    """
    from ..data.images import ImageFiles, collate_images, find_images
    from ..preprocess import IMAGENET_TORCH

    paths = find_images(folder)
    if len(paths) < 2 * batch_size:
        raise BadInput(f"{folder}: {len(paths)} images, need at least {2 * batch_size} for batch {batch_size}")
    recipe = dataclasses.replace(IMAGENET_TORCH, resize_size=round(input_size * 256 / 224), crop_size=input_size)
    passes = max(1, math.ceil((min_batches + 1) * batch_size / len(paths)))
    files = ImageFiles(paths * passes, recipe, min_side=recipe.resize_size if fast_decode else None)
    loader = torch.utils.data.DataLoader(
        files, batch_size=batch_size, num_workers=workers, collate_fn=collate_images, drop_last=True,
        prefetch_factor=4 if workers else None, pin_memory=model_device(model).type == "cuda",
    )
    images, start, latencies = 0, 0.0, []
    with torch.inference_mode():
        for i, batch in enumerate(loader):
            t = time.perf_counter()
            model(batch.images)
            if i == 0:
                start = time.perf_counter()
                continue
            latencies.append(time.perf_counter() - t)
            images += len(batch.images)
    elapsed = time.perf_counter() - start
    note = (f"{images} images from {folder}" + (f" ({passes} passes)" if passes > 1 else "") + f", {workers} workers"
            + (", fast decode" if fast_decode else ""))
    return BenchResult(mode, batch_size, images / elapsed, 1e3 * statistics.median(latencies),
                       1e3 * percentile(latencies, 0.9), None, note)


def machine(device: torch.device | str = "cpu") -> dict[str, object]:
    """What the numbers were measured on (with the GPU, its CUDA and cuDNN versions on a CUDA ``device``)."""
    cpu = cpu_info()
    return {
        "cpu": cpu.name, "cpu_features": cpu.describe(), "cpu_kind": cpu.kind, "threads": torch.get_num_threads(),
        "torch": torch.__version__, "capability": torch.backends.cpu.get_cpu_capability(), "amx_int8": cpu.amx,
        "amx_bf16": cpu.amx, "native_bf16": cpu.native_bf16, "python": platform.python_version(),
        **_gpu(torch.device(device)),
    }


def _gpu(device: torch.device) -> dict[str, object]:
    if device.type != "cuda":
        return {"device": device.type}
    return {"device": str(device), "gpu": torch.cuda.get_device_name(device), "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version()}


def format_table(results: Sequence[BenchResult]) -> str:
    """A plain-text table, one row per result."""
    header = ("mode", "batch", "img/s", "median ms", "p90 ms", "x baseline", "note")
    rows = [
        (r.mode, str(r.batch), f"{r.images_per_s:.1f}", f"{r.latency_ms_median:.1f}", f"{r.latency_ms_p90:.1f}",
         "" if r.ratio is None else f"{r.ratio:.2f}",
         r.note + ("" if r.of_model_only is None else f"; {r.of_model_only:.0%} of model-only"))
        for r in results
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i in (0, 6) else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in [header, *rows]]
    return "\n".join(line.rstrip() for line in lines)


def torchvision_baseline(name: str, model: nn.Module) -> nn.Module | None:
    """torchvision's eager fp32 model of the same architecture and weights, or ``None``."""
    try:
        import torchvision
    except ImportError:
        return None
    builder = getattr(torchvision.models, name, None)
    if builder is None:
        return None
    tv = builder(num_classes=model.num_classes or 1000)
    try:
        tv.load_state_dict(model.state_dict())
    except RuntimeError:
        return None
    return tv.eval()


def _build_modes(model: nn.Module, precisions: Sequence[str], backends: Sequence[str], compile: bool,
                 example: torch.Tensor, status: Callable[[str], None]) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """Each (backend, precision) of the table that runs on the model's device, built with ``optimize``;
    returns the models by mode name and each mode's backend."""
    from .optimize import optimize
    from .table import BACKENDS, not_here

    device = model_device(model)
    models: dict[str, nn.Module] = {}
    optimized: dict[str, str] = {}
    for backend in backends:
        entry = BACKENDS[backend]
        if device.type not in entry.devices:
            status(f"skipping {backend}: it runs on {' and '.join(entry.devices)}, not {device.type}")
            continue
        for precision in precisions:
            if precision not in entry.precisions or (backend == "torch" and not compile and precision == "int8"):
                continue  # without compiling: torch's int8 needs compiling
            mode = f"resnets {precision}" if backend == "torch" else f"{backend} {precision}"
            why_not = not_here(backend, precision, device)
            if why_not is not None:
                status(f"skipping {mode}: {why_not}")
                continue
            options = {"compile": compile} if backend == "torch" else {}
            status(f"preparing {mode}")
            models[mode] = optimize(model, precision, example_inputs=example, calibration=[example],
                                    backend=backend, **options)
            optimized[mode] = backend
    return models, optimized


def bench_modes(model: nn.Module, name: str, batches: Sequence[int], *, input_size: int | None = None,
                precisions: Sequence[str] | None = None, backends: Sequence[str] = ("torch",), compile: bool = True,
                runs: int | None = None, warmup: int = 2, end_to_end_dir: str | None = None, end_to_end_batches: int = 20,
                workers: int = 2, fast_decode: bool = False,
                status: Callable[[str], None] = lambda text: None) -> tuple[dict, list[BenchResult]]:
    """``resnets bench``'s matrix: every precision x backend of the table (``precisions``: default those the
    model's device runs natively) against torchvision's eager fp32 model of the same weights (or ours, where torchvision
    has no such model), interleaved per batch size; an engine used directly is timed right after the package's
    mode of it; a mode this CPU cannot run (OpenVINO bf16 without native bf16) is skipped with a ``status``. The
    report's ``auto_backend`` says what ``backend="auto"`` picks here for each precision, and why. ``end_to_end_dir``: a folder of images, also timed from files to answers. Returns the JSON report
    and the results."""
    from .table import BACKENDS, PRECISIONS, choose_backend, runs_natively

    device = model_device(model)
    size = input_size or model.input_size[-1]
    gen = torch.Generator().manual_seed(0)
    inputs = {b: torch.randn(b, 3, size, size, generator=gen).to(device) for b in batches}
    reference = torchvision_baseline(name, model)
    base_name = "torchvision eager fp32" if reference is not None else "resnets eager fp32"
    requested = precisions or [n for n in PRECISIONS if runs_natively(n, device)]
    built, optimized = _build_modes(model, requested, backends, compile, inputs[max(batches)], status)
    models = {base_name: reference.to(device) if reference is not None else model, **built}
    results = []
    for b in batches:
        timed_runs = runs or (50 if b == 1 else 10)
        modes = {}
        for mode, m in models.items():
            modes[mode] = m
            direct = getattr(BACKENDS[optimized[mode]].load(), "direct_benchmark", None) if mode in optimized else None
            if direct is not None:
                runner = direct(m, inputs[b])
                modes[runner.name] = runner
        status(f"batch {b}: {len(modes)} modes, {warmup} warm-up and {timed_runs} timed calls each")
        results += compare(modes, inputs[b], base_name, timed_runs, warmup)
        if end_to_end_dir and b > 1:
            for mode in optimized:
                r = end_to_end(models[mode], end_to_end_dir, b, size, workers,
                                   f"end-to-end {mode.removeprefix('resnets ')}", min_batches=end_to_end_batches,
                                   fast_decode=fast_decode)
                model_only = next(x for x in results if x.mode == mode and x.batch == b)
                r.of_model_only = r.images_per_s / model_only.images_per_s
                results.append(r)
    engines = {}
    for backend in backends:
        if device.type in BACKENDS[backend].devices:
            engines.update(BACKENDS[backend].load().describe())
    auto = {p: dataclasses.asdict(choose_backend(p, device)) for p in requested}
    report = {"model": name, "input_size": size, "baseline": base_name, "machine": machine(device),
              "engines": engines, "auto_backend": auto, "results": [dataclasses.asdict(r) for r in results]}
    return report, results
