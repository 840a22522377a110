"""``resnets export`` and ``resnets bench``: deployable files and honest speed numbers."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

from ..choices import BACKENDS, FORMATS, PRECISIONS
from .common import (
    UsageError, add_device_option, add_model_options, add_progress_option, model_and_weights, with_flags,
)

#: Batches ``resnets bench --end-to-end`` times per mode (cycling through the folder): a steady state.
END_TO_END_BATCHES = 20



def _csv(kind: type, choices: tuple[str, ...] | None = None):
    def parse(text: str) -> list:
        items = [kind(t) for t in text.split(",") if t.strip()]
        bad = [t for t in items if choices is not None and t not in choices]
        if not items or bad:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(choices or ['ints'])}")
        return items
    return parse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a model to ONNX or a torch.export program",
                       description="Export MODEL with a dynamic batch size and check the file against eager "
                                   "PyTorch (exit 1 when the difference exceeds the tolerance).")
    p.add_argument("model", metavar="MODEL", nargs="?", default=None,
                   help="a name from 'resnets list' (default: the architecture the weights record)")
    add_model_options(p, model_flag=False)
    p.add_argument("--format", choices=FORMATS, required=True, help="onnx or exported-program (.pt2) (required)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp32 (onnx and exported-program), bf16 or int8 (exported-program) (default: fp32)")
    p.add_argument("--input-size", type=int, default=None, help="square input side (default: the model's)")
    p.add_argument("--calibration", metavar="DIR", default=None,
                   help="int8: folder of images to calibrate on (default: random inputs, with a warning)")
    p.add_argument("--tolerance", type=float, default=None,
                   help="max |exported - eager| / max |eager| accepted (default: 1e-4 fp32, 0.05 bf16, 0.1 int8)")
    p.add_argument("-o", "--output", required=True, help="file to write (required)")
    add_progress_option(p)
    p.set_defaults(func=run_export)

    p = sub.add_parser("bench", help="images/s and latency per precision against torchvision eager fp32",
                       description="Benchmark optimised inference (resnets.optimize) against torchvision's eager "
                                   "fp32 model in the same process, interleaving the runs.")
    add_model_options(p)
    p.add_argument("--batch", type=_csv(int), default=[1, 16, 64], help="batch sizes (default: 1,16,64)")
    p.add_argument("--precision", type=_csv(str, PRECISIONS), default=None,
                   help="precisions (default: those the device runs natively: fp32,bf16,int8 on the CPU (bf16 "
                        "only with AVX-512 BF16 or AMX), "
                        "fp32,bf16,fp16 on CUDA)")
    p.add_argument("--backend", type=_csv(str, BACKENDS), default=["torch"],
                   help="any of torch, onnxruntime (CPU; fp32, int8) and openvino (CPU; fp32, bf16, int8), "
                        "timed as modes 'resnets PRECISION', 'onnxruntime PRECISION', 'openvino PRECISION'; "
                        "openvino adds 'OpenVINO direct PRECISION', the same file run as OpenVINO's "
                        "benchmark_app runs it (default: torch)")
    p.add_argument("--input-size", type=int, default=None, help="square input side (default: the model's)")
    p.add_argument("--runs", type=int, default=None, help="timed rounds (default: 50 at batch 1, else 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per mode first (default: 2)")
    p.add_argument("--no-compile", action="store_true",
                   help="skip torch.compile (int8 is then left out) (default: compile, as resnets.optimize does)")
    p.add_argument("--end-to-end", metavar="DIR", default=None,
                   help="also time JPEG decode + resize + inference over the images in DIR, read again until "
                        f"{END_TO_END_BATCHES} batches are timed (default: model only)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers for --end-to-end (default: 2)")
    p.add_argument("--fast-decode", action="store_true",
                   help="with --end-to-end: decode large JPEGs at a reduced scale, as predict --fast-decode "
                        "(default: full decode)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table (default: a table)")
    p.add_argument("--save", metavar="FILE", default=None, help="also write the JSON to FILE (default: not saved)")
    add_device_option(p)
    add_progress_option(p)
    p.set_defaults(func=run_bench)


def run_export(args: argparse.Namespace) -> int:
    from ..data.images import find_images
    from ..errors import BadInput, ExportMismatch
    from ..inference.export import export_model
    from ..data.batches import calibration_batches
    from ..pipeline import load_inference

    inf = load_inference(*model_and_weights(args), progress=args.progress)
    calibration = None
    if args.calibration:
        images = find_images(args.calibration)
        if not images:
            raise UsageError(f"--calibration {args.calibration}: no image files found")
        calibration = calibration_batches(images, inf.preprocessing)
    try:
        check = export_model(inf.model, args.output, args.format, args.precision, calibration, args.input_size,
                             args.tolerance)
    except ExportMismatch as e:
        print(f"resnets export: error: {e}", file=sys.stderr)
        return 1
    except BadInput as e:  # the arguments' checks: a usage error, in the flags' names
        raise UsageError(with_flags(str(e), ("format", "tolerance", "input_size", "calibration"), bare=False)) from e
    print(f"wrote {check.path} ({check.format}, {check.precision}, dynamic batch)")
    print(f"max abs diff vs eager fp32 on a batch of {check.checked}: {check.diff:.3g} (max |output| "
          f"{check.scale:.3g}, relative {check.relative:.3g}, tolerance {check.tolerance:g})")
    return 0


def run_bench(args: argparse.Namespace) -> int:
    """``resnets bench``; with ``--json`` whatever a library prints while it builds a mode goes to stderr, so
    standard output holds the JSON alone."""
    if not args.json:
        return _bench(args, sys.stdout)
    out = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):
        return _bench(args, out)


def _bench(args: argparse.Namespace, out) -> int:
    from ..atomic import atomic_path
    from ..device import resolve_device
    from ..factory import create_model
    from ..inference.bench import bench_modes, format_table

    if min(args.batch) < 1 or (args.runs is not None and args.runs < 1) or args.workers < 0:
        raise UsageError("--batch and --runs must be >= 1 and --workers >= 0")

    def status(text: str) -> None:
        if args.progress:  # a line per step: compiling and timing take minutes
            print(f"resnets bench: {text}", file=sys.stderr, flush=True)

    device = resolve_device(args.device)
    name, weights = model_and_weights(args)
    model = create_model(name, weights=weights, progress=args.progress).eval().to(device)
    report, results = bench_modes(
        model, name or model.pretrained_cfg.model, args.batch, input_size=args.input_size, precisions=args.precision,
        backends=args.backend, compile=not args.no_compile, runs=args.runs, warmup=args.warmup,
        end_to_end_dir=args.end_to_end, end_to_end_batches=END_TO_END_BATCHES, workers=args.workers,
        fast_decode=args.fast_decode, status=status)
    if args.save:
        with atomic_path(args.save) as tmp:
            tmp.write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report, indent=2), file=out)
    else:
        m, size = report["machine"], report["input_size"]
        where = m["gpu"] if device.type == "cuda" else f"{m['cpu']}, {m['threads']} threads"
        print(f"{report['model']} {size}x{size}, {where}, torch {m['torch']}")
        print(format_table(results))
        if device.type == "cpu":
            print(f"CPU: {m['cpu_features']}; backend auto picks "
                  + ", ".join(f"{p}: {c['backend']}" for p, c in report["auto_backend"].items())
                  + f" (the order measured on {m['cpu_kind']} CPUs, of the engines installed)")
    return 0
