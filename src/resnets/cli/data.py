"""``resnets data``: prepare data sets for training; ``resnets data shards`` writes WebDataset tar shards."""

from __future__ import annotations

import argparse

from .common import UsageError, add_progress_option, flags_in_errors


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="prepare data sets: WebDataset shards",
                       description="Prepare data sets for training.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=type(p))
    s = actions.add_parser(
        "shards", help="write a split as WebDataset tar shards",
        description="Write one split of FOLDER (an image folder, ILSVRC-2012 as downloaded, a .tar of one, CIFAR "
                    "python batches) as WebDataset tar shards in OUT: <split>-000000.tar, ... (each sample the "
                    "image's own bytes as <key>.jpg|png|... and its label as <key>.cls), shuffled once, and "
                    "<split>.json naming the classes and each shard's count. 'resnets train --data OUT' and "
                    "'resnets eval OUT' read them; webdataset reads them too.")
    s.add_argument("folder", metavar="FOLDER", help="the data set to read")
    s.add_argument("out", metavar="OUT", help="the folder to write the shards into")
    s.add_argument("--shard-size", type=int, default=1000, metavar="N",
                   help="images per shard (default: 1000; about 100 MB of ImageNet JPEGs)")
    s.add_argument("--split", choices=("train", "val", "test"), default="train", help="the split (default: train)")
    s.add_argument("--seed", type=int, default=0, help="the seed of the order written (default: 0)")
    add_progress_option(s)
    s.set_defaults(func=run_shards)


def run_shards(args: argparse.Namespace) -> int:
    from ..data.shard_writer import write_shards
    from ..data.shards import read_index

    if args.shard_size < 1:
        raise UsageError(f"--shard-size must be >= 1, got {args.shard_size}")
    with flags_in_errors(("shard_size", "split", "seed")):
        path = write_shards(args.folder, args.out, args.shard_size, args.split, args.seed, progress=args.progress)
    index = read_index(path)
    print(f"wrote {index.images} images of {args.folder} ({args.split}) as {len(index.shards)} shard(s) in "
          f"{args.out}; index {path}")
    return 0
