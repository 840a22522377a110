"""``resnets list`` and ``resnets summary``: what models there are and what they hold."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="print a table of models with parameters and multiply-adds",
                       description="Print a table of the registered models: exact parameter count, multiply-adds "
                                   "for one image at the model's input size, and that size.")
    p.add_argument("pattern", nargs="?",
                   help="shell-style filter, e.g. 'resnet*' or 'plain*' (default: every model)")
    p.add_argument("--weights", action="store_true",
                   help="list the matching models' pretrained weights instead, as 'resnets weights list' does (default: the models)")
    p.set_defaults(func=run_list)

    p = sub.add_parser(
        "summary", help="print a model's layers, parameters and multiply-adds",
        description="Print a Keras-style summary of a model.",
    )
    p.add_argument("model", metavar="MODEL", help="a name from 'resnets list'")
    p.add_argument("--input-size", type=int, default=None, help="square input size (default: 224, CIFAR nets 32)")
    p.add_argument("--num-classes", type=int, default=None, help="classifier size (default: the model's)")
    p.add_argument("--depth", type=int, default=3, help="module nesting depth shown in the table (default: 3)")
    p.set_defaults(func=run_summary)


def run_list(args: argparse.Namespace) -> int:
    if args.weights:
        from . import weights

        return weights.run_list(argparse.Namespace(model=args.pattern, cache_dir=None))
    import torch

    from ..factory import create_model
    from ..registry import list_models
    from ..summary import summarize

    names = list_models(args.pattern)
    if not names:
        print(f"no model matches {args.pattern!r}")
        return 1
    rows = []
    for name in names:
        with torch.device("meta"):  # shapes and counts only: no memory, no compute
            model = create_model(name)
        s = summarize(model, model.input_size, print_fn=None, depth=1)
        rows.append((name, f"{s.total_params:,}", f"{s.macs / 1e9:.3f} G", f"{model.input_size[-1]}"))
    header = ("model", "params", "mult-adds", "input")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for r in [header, *rows]:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return 0


def run_summary(args: argparse.Namespace) -> int:
    from ..factory import create_model
    from ..registry import model_builder
    from .common import UsageError

    try:
        model_builder(args.model)  # an unknown name is a usage error, with the registry's closest names
    except ValueError as e:
        raise UsageError(str(e)) from None
    model = create_model(args.model, num_classes=args.num_classes)
    size = model.input_size if args.input_size is None else (3, args.input_size, args.input_size)
    model.summary(size, depth=args.depth)
    return 0
