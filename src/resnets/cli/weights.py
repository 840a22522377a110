"""``resnets weights list|show|download|convert``: browse, describe, fetch and convert pretrained weights."""

from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import TYPE_CHECKING

from .common import WEIGHTS_CACHE_HELP, UsageError, add_progress_option

if TYPE_CHECKING:
    from ..weights import WeightsEntry

#: Names that pick a model's default weights of a kind; they need a model to mean one file.
ALIASES = ("imagenet", "cifar10")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("weights", help="list, show, download and convert pretrained weights",
                       description="Pretrained weights: the registry, the download cache, safetensors conversion.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    a = actions.add_parser("list", help="list the registered weights",
                           description="List the registered weights (timm's Hub checkpoints too), best ImageNet "
                                       "top-1 first.")
    a.add_argument("--model", help="only the weights of these models: a name or shell-style pattern, e.g. resnet50 "
                                   "or 'resnet5*' (default: every model)")
    a.add_argument("--cache-dir", help=WEIGHTS_CACHE_HELP)
    a.set_defaults(func=run_list)

    a = actions.add_parser("show", help="describe catalogued weights and the command that retrains them",
                           description="What catalogued weights are (model, accuracy, preprocessing, source, licence) "
                                       "and, where a resnets recipe made them, the command that retrains them.")
    a.add_argument("name", metavar="NAME", help="a catalogue name from 'resnets weights list', e.g. resnet50.tv_in1k_v2")
    a.set_defaults(func=run_show)

    a = actions.add_parser("download", help="download weights into the cache",
                           description="Download and verify weights files into the cache; print their paths.")
    a.add_argument("names", nargs="+", metavar="NAME",
                   help="registry names (e.g. resnet50.tv_in1k_v2, resnet50.a1_in1k) or hf-hub:ORG/NAME repos")
    a.add_argument("--cache-dir", help=WEIGHTS_CACHE_HELP)
    add_progress_option(a)
    a.set_defaults(func=run_download)

    a = actions.add_parser("convert", help="convert weights to .safetensors",
                           description="Convert a weights file (.pth/.pt/.th, Keras .h5, .safetensors) or a "
                                       "registry name to a .safetensors file that records its variant.")
    a.add_argument("src", metavar="IN",
                   help="a weights file, a registry name, or the alias 'imagenet'/'cifar10' with --model")
    a.add_argument("dst", metavar="OUT", help="the .safetensors file to write")
    a.add_argument("--model", help="the model whose default weights an alias means, e.g. resnet20 for cifar10 "
                                   "(default: none; required with an alias)")
    a.add_argument("--cache-dir", help=WEIGHTS_CACHE_HELP + " for registry names")
    add_progress_option(a)
    a.set_defaults(func=run_convert)


@functools.lru_cache(maxsize=None)
def _param_count(model_name: str, kwargs: tuple[tuple[str, object], ...]) -> int:
    """Parameters of a network, counted on the meta device (no memory); cached per variant."""
    import torch

    from ..registry import model_builder

    with torch.device("meta"):
        model = model_builder(model_name)(**dict(kwargs))
    return sum(p.numel() for p in model.parameters())


def _cached_file(entry: WeightsEntry, cache: str | None) -> Path | None:
    """The entry's file in its cache (the Hub's for timm's repos), or None: no request either way."""
    from ..weights import cached_path, is_cached
    from ..weights.hub import cached_hub_file, hub_name

    if (name := hub_name(entry.name)) is not None:
        return cached_hub_file(name, cache)
    return cached_path(entry, cache) if is_cached(entry, cache) else None


def _file_size(entry: WeightsEntry, cached: Path | None) -> str:
    """The published size, else the cached file's own size, else unknown."""
    size = entry.file_size_mb
    if size is None and cached is not None:
        size = cached.stat().st_size / 1e6
    return f"{size:.1f} MB" if size else "-"


def _by_accuracy(entry: WeightsEntry) -> tuple[bool, float]:
    """ImageNet-1k weights first, best top-1 first; then the rest (CIFAR-10, no published top-1) likewise."""
    from ..classes import imagenet_names

    return entry.classes != imagenet_names() or "top1" not in entry.metrics, -entry.metrics.get("top1", 0.0)


def run_list(args: argparse.Namespace) -> int:
    from ..registry import list_models
    from ..weights import list_weights
    from ..weights.hub import timm_catalogue

    models = set(list_models(args.model))
    if not models:
        raise UsageError(f"no model matches {args.model!r}; see 'resnets list'")
    entries = sorted([e for e in [*list_weights(), *timm_catalogue().values()] if e.model in models], key=_by_accuracy)
    if not entries:
        print(f"no registered weights for {args.model}")
        return 1
    header = ("name", "model", "top-1", "params", "file", "cached", "licence")
    rows = [
        (
            e.name, e.model, f"{e.metrics['top1']:.2f}" if "top1" in e.metrics else "-",
            f"{_param_count(e.model, tuple(sorted(e.model_kwargs.items()))):,}",
            _file_size(e, cached), "no" if cached is None else "yes", e.license.split(" (")[0],
        )
        for e in entries
        for cached in [_cached_file(e, args.cache_dir)]
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(c.ljust(w) if i < 2 or i == 6 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(r, widths))).rstrip())
    return 0


def retrain_command(entry: WeightsEntry, data: str = "~/imagenet", gpus: int = 8) -> str | None:
    """The ``torchrun`` command that retrains ``entry`` with the recipe that made it, or None if none did."""
    from ..weights.registry import training_recipe

    recipe = training_recipe(entry)
    if recipe is None:
        return None
    return f"torchrun --nproc-per-node {gpus} -m resnets train --model {entry.model} --recipe {recipe} --data {data}"


def run_show(args: argparse.Namespace) -> int:
    from ..weights import get_weights
    from ..weights.hub import timm_catalogue

    entry = timm_catalogue().get(args.name)
    if entry is None:
        try:
            entry = get_weights(args.name)
        except ValueError as e:
            raise UsageError(str(e)) from None
    p = entry.preprocessing
    metrics = ", ".join(f"{k} {v}" for k, v in entry.metrics.items()) or "none published"
    layout = {k: v for k, v in entry.model_kwargs.items() if k != "num_classes"}
    print(f"{entry.name}\n  model: {entry.model}" + (f" {layout}" if layout else "") +
          f"\n  accuracy: {metrics}" + (f" ({entry.metrics_data})" if entry.metrics_data else "") +
          f"\n  preprocessing: resize {p.resize_size}, crop {p.crop_size}, mean {p.mean}, std {p.std}"
          f"\n  source: {entry.source}\n  licence: {entry.license}")
    command = retrain_command(entry)
    if command is None:
        print("  retrain: no resnets recipe is recorded for these weights (the source above says how they were made)")
    else:
        print(f"  retrain: {command}" + ("\n  (the recipe trains the model's default layout; these weights' "
                                          f"layout is {layout}: resnets.train(model_kwargs=...))" if layout else ""))
    return 0


def run_download(args: argparse.Namespace) -> int:
    from ..weights import get_weights
    from ..weights.hub import hub_name
    from ..weights.loading import weights_file

    for name in args.names:  # every name checked before any download
        try:
            if hub_name(name) is None:
                get_weights(name)
        except ValueError as e:
            raise UsageError(str(e)) from None
    for name in args.names:
        print(weights_file(None, name, args.cache_dir, args.progress)[0])
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from ..weights import convert_to_safetensors, get_weights

    if Path(args.dst).suffix != ".safetensors":
        raise UsageError(f"the output must be a .safetensors file, got {args.dst}")
    src = args.src
    if src in ALIASES and not Path(src).is_file():
        if not args.model:
            raise UsageError(f"{src!r} is an alias for a model's default {src} weights: say which model with "
                             f"--model (e.g. --model {'resnet20' if src == 'cifar10' else 'resnet50'}), or give a "
                             "registry name from 'resnets weights list'")
        try:
            src = get_weights(src, args.model).name
        except ValueError as e:
            raise UsageError(str(e)) from None
    path, entry = convert_to_safetensors(src, args.dst, cache_dir=args.cache_dir, progress=args.progress)
    what = f" ({entry.model}, {entry.name})" if entry else ""
    print(f"wrote {path}{what}")
    return 0
