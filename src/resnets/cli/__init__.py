"""The ``resnets`` command line: one subcommand per job, each defined in its own module.

A subcommand module has ``register(subparsers)``, which adds its parser and sets
``func=handler`` on it; the handler takes the parsed arguments and returns an exit code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__
from . import explain, infer, models, predict, serve, train, weights
from .common import UsageError

COMMAND_MODULES = [models, weights, predict, explain, train, infer, serve]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resnets", description="Deep residual networks: models, weights, prediction, training, inference."
    )
    parser.add_argument("--version", action="version", version=f"resnets {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("resnets: interrupted", file=sys.stderr)
        return 130
    except UsageError as e:
        if args.debug:
            raise
        parser.exit(2, f"resnets {args.command}: error: {e}\n")
    except Exception as e:  # noqa: BLE001 - the CLI's one place that turns errors into messages
        if args.debug:
            raise
        print(f"resnets {args.command}: error: {e}", file=sys.stderr)
        return 1
