"""What the subcommands share: the usage error, and the model/weights/device options of every inference command.

Kept apart from ``cli/__init__`` so that subcommand modules never import the package that imports them.
"""

from __future__ import annotations

import argparse

from ..device import DEVICE_PATTERN
from ..inference.optimize import BACKENDS
from ..inference.prepare import PRECISIONS

#: What ``--weights`` means when not given, the same for every command that loads a model.
DEFAULT_WEIGHTS = "imagenet"
#: The architecture used when neither ``--model`` nor the weights name one (``imagenet``, ``none``).
DEFAULT_MODEL = "resnet50"


class UsageError(Exception):
    """Bad command-line usage found after parsing; exits with status 2 like argparse."""


def _device(text: str) -> str:
    if not DEVICE_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")
    return text


def add_device_option(p: argparse.ArgumentParser) -> None:
    """``--device``, the same for every inference command."""
    p.add_argument("--device", type=_device, default="auto",
                   help="auto (cuda if a GPU is available, else cpu), cpu, cuda or cuda:N (default: auto)")


def add_model_options(p: argparse.ArgumentParser, model_flag: bool = True) -> None:
    """``--model`` and ``--weights``, with the same meaning and defaults for every command."""
    if model_flag:
        p.add_argument("--model", default=None,
                       help="model name from 'resnets list' (default: the architecture the weights file or name "
                            f"records; {DEFAULT_MODEL} for 'imagenet' and 'none')")
    p.add_argument("--weights", default=DEFAULT_WEIGHTS,
                   help="registry name from 'resnets weights list', the alias 'imagenet' or 'cifar10', a local "
                        f"weights file, or 'none' for random weights (default: {DEFAULT_WEIGHTS})")


def add_precision_options(p: argparse.ArgumentParser) -> None:
    """``--precision`` and ``--backend`` of the commands that run a model through :func:`resnets.optimize`."""
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp32 (eager), or bf16/fp16/int8 through resnets.optimize (compiled; fp16 on CUDA only, "
                        "int8 on the CPU only) (default: fp32)")
    p.add_argument("--backend", choices=BACKENDS, default="torch",
                   help="torch, or onnxruntime (CPU; fp32 and int8 only) (default: torch)")


def model_and_weights(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """``(model, weights)`` from the parsed options: ``--weights none`` means random weights."""
    weights = None if str(args.weights).lower() == "none" else args.weights
    model = args.model
    if model is None and (weights is None or weights in ("imagenet", "cifar10")):
        model = DEFAULT_MODEL if weights != "cifar10" else "resnet20"
    return model, weights
