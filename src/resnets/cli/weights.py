"""``resnets weights list|download|convert``: browse, fetch and convert pretrained weights."""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import torch

from ..registry import list_models, model_builder
from ..weights import (
    WeightsEntry, cached_file, cached_path, convert_to_safetensors, get_weights, is_cached, list_weights,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("weights", help="list, download and convert pretrained weights",
                       description="Pretrained weights: the registry, the download cache, safetensors conversion.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    a = actions.add_parser("list", help="list the registered weights", description="List the registered weights.")
    a.add_argument("--model", help="only the weights of this model, e.g. resnet50")
    a.add_argument("--cache-dir", help="weights cache (default: $RESNETS_CACHE or ~/.cache/resnets)")
    a.set_defaults(func=run_list)

    a = actions.add_parser("download", help="download weights into the cache",
                           description="Download and verify weights files into the cache; print their paths.")
    a.add_argument("names", nargs="+", metavar="NAME", help="registry names, e.g. resnet50.tv_in1k_v2")
    a.add_argument("--cache-dir", help="weights cache (default: $RESNETS_CACHE or ~/.cache/resnets)")
    a.add_argument("--no-progress", action="store_true", help="no progress bar")
    a.set_defaults(func=run_download)

    a = actions.add_parser("convert", help="convert weights to .safetensors",
                           description="Convert a weights file (.pth/.pt/.th, Keras .h5, .safetensors) or a "
                                       "registry name to a .safetensors file that records its variant.")
    a.add_argument("src", metavar="IN", help="a weights file or a registry name")
    a.add_argument("dst", metavar="OUT", help="the .safetensors file to write")
    a.add_argument("--cache-dir", help="weights cache for registry names")
    a.set_defaults(func=run_convert)


@functools.lru_cache(maxsize=None)
def _param_count(model_name: str, kwargs: tuple[tuple[str, object], ...]) -> int:
    """Parameters of a network, counted on the meta device (no memory); cached per variant."""
    with torch.device("meta"):
        model = model_builder(model_name)(**dict(kwargs))
    return sum(p.numel() for p in model.parameters())


def _file_size(entry: WeightsEntry, cache: str | None) -> str:
    """The published size, else the cached file's own size, else unknown."""
    size = entry.file_size_mb
    if size is None and is_cached(entry, cache):
        size = cached_path(entry, cache).stat().st_size / 1e6
    return f"{size:.1f} MB" if size else "-"


def run_list(args: argparse.Namespace) -> int:
    from .common import UsageError

    if args.model and args.model not in list_models():
        raise UsageError(f"unknown model {args.model!r}; see 'resnets list'")
    entries = list_weights(args.model)
    if not entries:
        print(f"no registered weights for {args.model}")
        return 1
    header = ("name", "model", "top-1", "params", "file", "cached")
    rows = [
        (
            e.name, e.model, f"{e.metrics['top1']:.2f}" if "top1" in e.metrics else "-",
            f"{_param_count(e.model, tuple(sorted(e.model_kwargs.items()))) / 1e6:.2f} M",
            _file_size(e, args.cache_dir), "yes" if is_cached(e, args.cache_dir) else "no",
        )
        for e in entries
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip())
    return 0


def run_download(args: argparse.Namespace) -> int:
    from .common import UsageError

    entries = []
    for name in args.names:
        try:
            entries.append(get_weights(name))
        except ValueError as e:
            raise UsageError(str(e)) from None
    for entry in entries:
        print(cached_file(entry, args.cache_dir, progress=not args.no_progress))
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from .common import UsageError

    if Path(args.dst).suffix != ".safetensors":
        raise UsageError(f"the output must be a .safetensors file, got {args.dst}")
    path, entry = convert_to_safetensors(args.src, args.dst, cache_dir=args.cache_dir)
    what = f" ({entry.model}, {entry.name})" if entry else ""
    print(f"wrote {path}{what}")
    return 0
