"""``resnets explain``: class activation maps of the user's images as PNG pictures (and ``predict --explain``)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import BadInput
from ..choices import METHODS
from .common import UsageError, add_device_option, add_model_options, model_and_weights

if TYPE_CHECKING:
    from ..pipeline import Inference


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="heat maps of where the network saw its answer",
                       description="Write one PNG per image (files or folders) into DIR: the photo with the class "
                                   "activation map of the explained class overlaid, its name and probability.")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files and folders of images")
    p.add_argument("-o", "--output-dir", required=True, metavar="DIR", help="folder for the PNG files (required)")
    add_model_options(p)
    p.add_argument("--target", metavar="NAME|INDEX",
                   help="class to explain in every image, by name or index (default: each image's top class)")
    p.add_argument("--method", choices=METHODS, default="gradcam", help="(default: gradcam)")
    p.add_argument("--layer", type=int, default=None,
                   help="stage whose feature map is explained, 1..4 (CIFAR nets 1..3) (default: the last)")
    p.add_argument("--sheet", nargs="?", const="", default=None, metavar="FILE",
                   help="also write a contact sheet of all images (default FILE: DIR/sheet.png)")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch (default: 32)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes decoding images (default: 2)")
    add_device_option(p)
    p.set_defaults(func=run_explain)


def write_explanations(inf: Inference, paths: Sequence[Path], out_dir: str | os.PathLike, target: int | None = None,
                       method: str = "gradcam", layer: int | None = None, sheet: str | os.PathLike | None = None,
                       batch_size: int = 32, workers: int = 2, command: str | None = "explain") -> int:
    """Write the PNGs of :func:`resnets.explain_images.explain_files` for an Inference and its image paths
    (an optimized one is explained through its eager fp32 weights); print one line per PNG and list bad files
    on stderr as ``resnets <command>: skipped ...`` (``command=None``: silent, for ``predict --explain``, which
    reports bad files itself). Returns the number of files that failed."""
    from ..explain_images import explain_files

    failed = 0
    for item in explain_files(inf, paths, out_dir, target, method, layer, sheet, batch_size, workers):
        if item.error is not None:
            failed += 1
            if command:
                print(f"resnets {command}: skipped {item.error}", file=sys.stderr)
        elif command:
            print(f"{item.output}  {item.class_name}  {item.probability:.2%}", flush=True)
    return failed


def run_explain(args: argparse.Namespace) -> int:
    from ..data.images import find_images
    from ..pipeline import load_inference

    if args.batch_size < 1 or args.workers < 0:
        raise UsageError("--batch-size must be >= 1 and --workers >= 0")
    paths = find_images(args.inputs)
    if not paths:
        raise BadInput(f"no image files found in {' '.join(args.inputs)}")
    model, weights = model_and_weights(args)
    inf = load_inference(model, weights, device=args.device)
    from ..classes import class_index

    target = None if args.target is None else class_index(inf.classes, args.target)
    sheet = None if args.sheet is None else (args.sheet or Path(args.output_dir) / "sheet.png")
    failed = write_explanations(inf, paths, args.output_dir, target, args.method, args.layer, sheet,
                                args.batch_size, args.workers)
    if sheet is not None and failed < len(paths):
        print(f"contact sheet: {sheet}")
    return 1 if failed else 0
