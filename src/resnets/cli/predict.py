"""``resnets predict``, ``resnets features`` and ``resnets eval``: pretrained models on the user's images."""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import BadInput
from ..choices import REPORT_WRONG, TTA
from .common import (
    UsageError, add_device_option, add_model_options, add_precision_options, add_progress_option, model_and_weights,
    flags_in_errors, say_what_runs,
)

#: The Ray engine's arguments that its messages name (``actors=``), as this command's flags.
RAY_ARGUMENTS = ("actors", "device", "address", "precision", "backend", "batch_size")


def _model_options(p: argparse.ArgumentParser, int8_calibrates_on_inputs: bool = True) -> None:
    add_model_options(p)
    add_precision_options(p, int8_calibrates_on_inputs)
    p.add_argument("--batch-size", type=int, default=32, help="images per batch (default: 32)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes decoding images (default: 2)")
    p.add_argument("--fast-decode", action="store_true",
                   help="decode large JPEGs at 1/2 to 1/8 scale (libjpeg), still at least the resize size: several "
                        "times faster on photos, pixels a little different from a full decode (default: full decode)")
    add_device_option(p)
    add_progress_option(p)


def _engine_options(p: argparse.ArgumentParser) -> None:
    """``--engine`` and the Ray engine's options (``resnets.ray``), for predict and features."""
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: decode in DataLoader workers on this machine; ray: Ray Data, decoding as tasks on "
                        "every CPU of a Ray cluster and the model in a pool of actors (pip install "
                        "'resnets[ray]') (default: local)")
    p.add_argument("--address", default=None,
                   help="with --engine ray: the running Ray cluster to use, auto or HOST:PORT; every node must see "
                        "the images and weights at the same paths (default: start Ray on this machine)")
    p.add_argument("--actors", type=int, default=1,
                   help="with --engine ray: model copies running at once, one CPU (or GPU) each (default: 1)")


def _engine(args: argparse.Namespace) -> str:
    """The engine asked for, after checking that the Ray options come with it."""
    if args.engine != "ray" and (args.address is not None or args.actors != 1):
        raise UsageError("--address and --actors need --engine ray")
    if args.engine == "ray" and args.fast_decode:
        raise UsageError("--fast-decode is an option of the local engine (Ray decodes in its own tasks)")
    if args.actors < 1:
        raise UsageError("--actors must be >= 1")
    return args.engine


def _ray_options(args: argparse.Namespace) -> dict:
    """What resnets.ray's jobs take from the shared options."""
    model, weights = model_and_weights(args)
    return {"weights": weights, "model": model, "precision": args.precision, "device": args.device,
            "backend": args.backend, "batch_size": args.batch_size, "actors": args.actors, "address": args.address}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify images with a pretrained model",
                       description="Print the top classes of each image (files or folders).")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files and folders of images")
    _model_options(p)
    _engine_options(p)
    p.add_argument("--top", type=int, default=5, help="classes shown per image (default: 5)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per image, one per line (default: a readable list)")
    p.add_argument("--explain", metavar="DIR",
                   help="also write each image's Grad-CAM map of its top class as DIR/<name>.png "
                        "(see 'resnets explain') (default: no maps)")
    p.set_defaults(func=run_predict)

    p = sub.add_parser("features", help="write one feature vector per image",
                       description="Extract pooled features of every image under DIR into OUT (.npz, .npy or "
                                   ".parquet). Resumable: rerun the same command after an interruption.")
    p.add_argument("inputs", nargs="+", metavar="DIR", help="folders (or files) of images")
    p.add_argument("-o", "--output", required=True,
                   help="output file: .npz, .npy (paths in OUT.paths.jsonl) or .parquet (required)")
    _model_options(p)
    _engine_options(p)
    p.add_argument("--pooling", choices=("avg", "max"), default="avg", help="global pooling (default: avg)")
    p.add_argument("--layer", type=int, default=None,
                   help="stage whose output to pool, 1..4 = C2..C5 (default: the last)")
    p.set_defaults(func=run_features)

    p = sub.add_parser("eval", help="top-1/top-5 accuracy on a labelled data set, or with --report the full report",
                       description="Evaluate on an image folder (DATA/<class>/*, or its val/ or test/ split), "
                                   "a .tar of one, or CIFAR-10 python batches. Where the data's classes are a subset "
                                   "of the model's (matched by name or ImageNet wnid), every score is taken over the "
                                   "data's classes only. --report DIR also writes report.json (every number), "
                                   "report.html (a static page: open it from disk) and its pictures: per-class "
                                   "precision, recall, F1 and support with macro and weighted averages, NLL, Brier "
                                   "score, ECE and MCE (15 equal-width confidence bins), the normalised confusion "
                                   "matrix, the reliability diagram and the most confidently wrong images.")
    p.add_argument("data", metavar="DATA",
                   help="an image folder (DATA/<class>/*, or its val/ or test/ split), a .tar of one, or "
                        "cifar-10-batches-py")
    _model_options(p, int8_calibrates_on_inputs=False)
    p.add_argument("--calibration", metavar="DIR",
                   help="images for int8 calibration, not from the test set (required with --precision int8; "
                        "default: none)")
    p.add_argument("--by-position", action="store_true",
                   help="accept class folders that are not the model's classes, taken in sorted order as the "
                        "model's classes 0, 1, ... (default: refuse)")
    p.add_argument("--tta", choices=TTA, default="none",
                   help="test-time augmentation: flip averages the softmax of each image and its mirror image "
                        "(twice the compute); ten-crop the softmax of the four corner and the centre crops of the "
                        "resized image and their mirror images (ten times) (default: none)")
    p.add_argument("--ten-crop", dest="tta", action="store_const", const="ten-crop",
                   help="the paper's 10-crop test: the same as --tta ten-crop (default: off, --tta decides)")
    p.add_argument("--report", metavar="DIR",
                   help="also write the full report into DIR: report.json, report.html and PNG pictures (needs "
                        "matplotlib: pip install 'resnets[plot]') (default: no report)")
    p.add_argument("--wrong", type=int, default=REPORT_WRONG, metavar="N",
                   help=f"with --report: the N most confidently wrong images on its contact sheet (default: {REPORT_WRONG})")
    p.add_argument("--json", action="store_true", help="print the result as JSON (default: one line of text)")
    p.set_defaults(func=run_eval)


def _check_sizes(args: argparse.Namespace) -> None:
    if args.batch_size < 1 or args.workers < 0:
        raise UsageError("--batch-size must be >= 1 and --workers >= 0")


def _images(args: argparse.Namespace) -> list:
    """The image files named on the command line; none at all is an error."""
    from ..data.images import find_images

    _check_sizes(args)
    paths = find_images(args.inputs)
    if not paths:
        raise BadInput(f"no image files found in {' '.join(args.inputs)}")
    return paths


def run_predict(args: argparse.Namespace) -> int:
    from ..pipeline import load_inference
    from ..predict import predict_files

    paths = _images(args)
    if _engine(args) == "ray":
        if args.explain:
            raise UsageError("--explain runs on this machine: drop --engine ray, or run 'resnets explain' afterwards")
        from ..ray import predict_files as ray_predict_files

        with flags_in_errors(RAY_ARGUMENTS):
            preds = ray_predict_files(paths, top=args.top, **_ray_options(args))
    else:
        inf = load_inference(*model_and_weights(args), args.precision, calibration=paths, device=args.device,
                             backend=args.backend, fast_decode=args.fast_decode, progress=args.progress)
        say_what_runs(args, inf)
        preds = predict_files(inf, paths, args.top, args.batch_size, args.workers)
    failed = 0
    for pred in preds:
        if args.json:
            print(json.dumps(pred.to_dict()), flush=True)
        elif pred.error is None:
            print(pred.path)
            for wnid, name, prob in pred.top:
                print(f"  {prob:7.2%}  {name}" + (f"  ({wnid})" if wnid != name and not wnid.isdigit() else ""))
        if pred.error is not None:
            failed += 1
            print(f"resnets predict: skipped {pred.error}", file=sys.stderr)
    if args.explain:
        from .explain import write_explanations

        write_explanations(inf, paths, args.explain, batch_size=args.batch_size, workers=args.workers, command=None)
    return 1 if failed else 0


def run_features(args: argparse.Namespace) -> int:
    from ..features import extract_features
    from ..pipeline import load_inference

    paths = _images(args)
    if _engine(args) == "ray":
        from ..ray import extract_features as ray_extract_features

        with flags_in_errors(RAY_ARGUMENTS):
            run = ray_extract_features(paths, args.output, pooling=args.pooling, layer=args.layer,
                                       progress=args.progress, **_ray_options(args))
    else:
        inf = load_inference(*model_and_weights(args), args.precision, features=(args.pooling, args.layer),
                             calibration=paths, device=args.device, backend=args.backend,
                             fast_decode=args.fast_decode, progress=args.progress)
        say_what_runs(args, inf)
        job = {"model": inf.name, **{k: getattr(args, k) for k in ("weights", "precision", "pooling", "layer")},
               **({"fast_decode": True} if args.fast_decode else {})}  # other pixels: not mixed with a full decode
        run = extract_features(inf, paths, args.output, args.batch_size, args.workers, progress=args.progress,
                               job=job)
    print(f"wrote {run.images} x {run.dim} features to {run.out}"
          + (f" ({run.resumed} done in an earlier run)" if run.resumed else ""))
    if run.errors:
        print(f"{len(run.errors)} unreadable images listed in {run.out}.errors.tsv", file=sys.stderr)
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from ..data.images import find_images
    from ..evaluate import evaluate
    from ..pipeline import load_inference

    from ..inference.table import precision

    _check_sizes(args)
    if args.wrong < 0:
        raise UsageError("--wrong must be >= 0")
    if precision(args.precision).needs_calibration and not args.calibration:
        raise UsageError(f"--precision {args.precision} needs --calibration DIR: images to calibrate on, "
                         "not from the test set")
    calibration = find_images(args.calibration) if args.calibration else None
    inf = load_inference(*model_and_weights(args), args.precision, calibration=calibration, device=args.device,
                         backend=args.backend, fast_decode=args.fast_decode, progress=args.progress)
    say_what_runs(args, inf)
    with flags_in_errors(("report", "wrong")):
        acc = evaluate(inf, args.data, args.batch_size, args.workers, progress=args.progress,
                       by_position=args.by_position, tta=args.tta, report=args.report, wrong=args.wrong)
    if args.json:
        print(json.dumps({"model": inf.name, "weights": args.weights, "tta": args.tta, **acc.to_dict()}))
    else:
        tta = {"flip": ", flip TTA", "ten-crop": ", 10-crop"}.get(args.tta, "")
        subset = f", over the data's {acc.classes} of the model's {acc.model_classes} classes" if acc.subset else ""
        top5 = "" if acc.top5 is None else f"  top-5 {acc.top5:.2f}%"
        print(f"{inf.name} ({args.weights}{tta}) on {args.data}: top-1 {acc.top1:.2f}%{top5}  "
              f"({acc.images} images{subset})")
        if acc.report:
            print(f"report: {acc.report}")
        for path, error in acc.errors:
            print(f"resnets eval: skipped {error}", file=sys.stderr)
    return 0
