"""The ``resnets`` command line: one subcommand per job, each defined in its own module.

A subcommand module has ``register(subparsers)``, which adds its parser and sets
``func=handler`` on it; the handler takes the parsed arguments and returns an exit code.
Building the parser imports no torch (``resnets --help`` and ``--version`` start in a fraction of a
second): command modules import what they run inside their handlers.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .. import __version__
from . import calibrate, data, explain, infer, models, predict, serve, train, weights
from .common import Parser, UsageError

COMMAND_MODULES = [models, weights, predict, calibrate, explain, train, data, infer, serve]
#: Exit status after the reader of our output went away (``resnets list | head``): 128 + SIGPIPE, as shells report.
EXIT_BROKEN_PIPE = 141


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="resnets", description="Deep residual networks: models, weights, prediction, training, inference."
    )
    parser.add_argument("--version", action="version", version=f"resnets {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show full tracebacks on errors and the third-party warnings hidden by default")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def _stop_quietly_on_broken_pipe() -> int:
    """The reader closed the pipe: point stdout at /dev/null so the exit-time flush does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return EXIT_BROKEN_PIPE


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    previous = os.environ.get("RESNETS_DEBUG")
    if args.debug:
        os.environ["RESNETS_DEBUG"] = "1"  # resnets.quiet: show the known-harmless third-party warnings too
    try:
        return _run(parser, args)
    finally:  # main() called from Python (tests, notebooks) leaves the environment as it found it
        if previous is None:
            os.environ.pop("RESNETS_DEBUG", None)
        else:
            os.environ["RESNETS_DEBUG"] = previous


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, while it can still be handled
        return code
    except BrokenPipeError:
        return _stop_quietly_on_broken_pipe()
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
