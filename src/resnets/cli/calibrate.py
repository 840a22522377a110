"""``resnets calibrate``: fit the softmax temperature of a model on held-out images and write the calibrated file."""

from __future__ import annotations

import argparse
import json

from .common import UsageError, add_device_option, add_model_options, add_progress_option, flags_in_errors, model_and_weights


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate", help="temperature scaling: make a model's confidence mean what it says",
        description="Fit one softmax temperature T (Guo et al. 2017) by minimising the NLL (L-BFGS) on held-out "
                    "images of DATA, and write the weights with it to OUT, a model file whose entry records T and "
                    "the ECE and NLL before and after on those images. Every probability then divides the logits "
                    "by T (predict, eval, serve, the Ray engine, the Keras-style predict); the logits of model(x) "
                    "stay raw, so the top-1 class never changes. Never fit on the images you report scores on.")
    add_model_options(p)
    p.add_argument("--data", required=True, metavar="DATA",
                   help="labelled images: an image folder (DATA/<class>/*, or its val/ or test/ split, which is "
                        "used), a .tar of one, or cifar-10-batches-py (required)")
    p.add_argument("--val-split", type=int, default=0, metavar="N",
                   help="fit on N images of DATA's training split, held out as 'resnets train --val-split N' holds "
                        "them out (default: 0, fit on DATA's val or test split)")
    p.add_argument("--seed", type=int, default=None,
                   help="with --val-split: the training run's seed, which chose the held-out images (default: the "
                        "seed the weights record, else 0)")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="the calibrated model file to write (.safetensors) (required)")
    p.add_argument("--by-position", action="store_true",
                   help="accept class folders that are not the model's classes, taken in sorted order as the "
                        "model's classes 0, 1, ... (default: refuse)")
    p.add_argument("--batch-size", type=int, default=128, help="images per batch (default: 128)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes decoding images (default: 2)")
    add_device_option(p)
    add_progress_option(p)
    p.add_argument("--json", action="store_true", help="print the fit as JSON (default: two lines of text)")
    p.set_defaults(func=run_calibrate)


def run_calibrate(args: argparse.Namespace) -> int:
    from ..evaluate import calibrate
    from ..pipeline import load_inference

    if args.batch_size < 1 or args.workers < 0 or args.val_split < 0:
        raise UsageError("--batch-size must be >= 1, --workers and --val-split >= 0")
    if not args.output.endswith(".safetensors"):
        raise UsageError(f"--output must be a .safetensors file, got {args.output}")
    inf = load_inference(*model_and_weights(args), device=args.device, progress=args.progress)
    with flags_in_errors(("val_split", "seed", "by_position")):
        fit = calibrate(inf, args.data, args.output, val_split=args.val_split, seed=args.seed,
                        batch_size=args.batch_size, workers=args.workers, progress=args.progress,
                        by_position=args.by_position)
    r = fit.record
    if args.json:
        print(json.dumps({"output": str(fit.path), "temperature": fit.temperature, **r}))
    else:
        print(f"temperature {fit.temperature:.4f} fitted on {r['images']} images of {r['data']} ({r['split']}): "
              f"ECE {100 * r['ece_before']:.2f}% -> {100 * r['ece_after']:.2f}%, "
              f"NLL {r['nll_before']:.4f} -> {r['nll_after']:.4f}")
        print(f"wrote {fit.path}")
    return 0
