"""What the subcommands share: the usage error, the parser class, and the options of every inference command.

Kept apart from ``cli/__init__`` so that subcommand modules never import the package that imports them.
Nothing here imports torch: ``resnets --help`` builds every parser, and must stay fast.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterable
import re
from collections.abc import Callable, Iterator, Sequence

from ..choices import BACKEND_CHOICES, DEVICE_PATTERN, PRECISIONS
from ..errors import BadInput

#: What ``--weights`` means when not given, the same for every command that loads a model.
DEFAULT_WEIGHTS = "imagenet"
#: The architecture used when neither ``--model`` nor the weights name one (``imagenet``, ``none``).
DEFAULT_MODEL = "resnet50"
#: ``--device`` help, word for word the same on every command.
DEVICE_HELP = "auto (cuda if a GPU is available, else cpu), cpu, cuda or cuda:N (default: auto)"
#: ``--cache-dir`` help of the commands that read registered weights.
WEIGHTS_CACHE_HELP = "weights cache (default: $RESNETS_CACHE, else ~/.cache/resnets)"


class UsageError(BadInput):
    """Bad command-line usage found after parsing; exits with status 2 like argparse."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose options can be added on first use: ``add_parser(..., options=fn)`` calls
    ``fn(parser)`` only when that subcommand is parsed or its help shown, so options whose help needs a
    heavy module (the training recipes import torch) cost nothing to ``resnets --help`` or other commands."""

    def __init__(self, *args, options: Callable[[argparse.ArgumentParser], None] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._deferred = options

    def add_deferred_options(self) -> None:
        """Add the options given as ``options=`` now (done once; later calls do nothing)."""
        if self._deferred is not None:
            add, self._deferred = self._deferred, None
            add(self)

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None):
        self.add_deferred_options()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self.add_deferred_options()
        return super().format_usage()

    def format_help(self) -> str:
        self.add_deferred_options()
        return super().format_help()


def with_flags(message: str, names: Iterable[str], bare: bool = True, renamed: dict[str, str] | None = None) -> str:
    """A library message that names Python arguments, with the CLI's flags instead: ``resume=True`` -> ``--resume``,
    ``precision='fp32'`` -> ``--precision fp32``, ``out=`` -> ``--out``, and with ``bare`` a plain ``max_batch`` ->
    ``--max-batch`` (for names no English word shares). ``renamed``: argument -> flag where they differ."""
    for name in sorted(names, key=len, reverse=True):
        flag = "--" + (renamed or {}).get(name, name).replace("_", "-")
        word = rf"(?<![\w-]){re.escape(name)}"
        message = re.sub(rf"{word}=True\b", flag, message)
        message = re.sub(rf"{word}='([^']*)'", rf"{flag} \1", message)
        message = re.sub(rf"{word}=(?=\w)", flag + " ", message)
        message = re.sub(rf"{word}=", flag, message)
        if bare:
            message = re.sub(rf"{word}\b", flag, message)
    return message


@contextlib.contextmanager
def flags_in_errors(names: Iterable[str], renamed: dict[str, str] | None = None) -> Iterator[None]:
    """Errors raised inside, whose messages name Python arguments (``resume=True``), raised again (same type)
    naming the CLI's flags (``--resume``): see :func:`with_flags`."""
    try:
        yield
    except (ValueError, ImportError, RuntimeError) as e:
        message = with_flags(str(e), names, bare=False, renamed=renamed)
        if message == str(e):
            raise
        try:
            again = type(e)(message)
        except TypeError:  # an exception type with other arguments: as it was
            raise e from None
        raise again from e


def parse_device(text: str) -> str:
    """argparse type of ``--device``: auto, cpu, cuda or cuda:N."""
    if not DEVICE_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")
    return text


def add_device_option(p: argparse.ArgumentParser) -> None:
    """``--device``, the same for every command that runs a model."""
    p.add_argument("--device", type=parse_device, default="auto", help=DEVICE_HELP)


def add_progress_option(p: argparse.ArgumentParser) -> None:
    """``--no-progress``, the same for every long-running command."""
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress output (default: a bar on a terminal, a plain line every 30 s in a log)")


def add_model_options(p: argparse.ArgumentParser, model_flag: bool = True) -> None:
    """``--model`` and ``--weights``, with the same meaning and defaults for every command."""
    if model_flag:
        p.add_argument("--model", default=None,
                       help="model name from 'resnets list' (default: the architecture the weights file or name "
                            f"records; {DEFAULT_MODEL} for 'imagenet' and 'none')")
    p.add_argument("--weights", default=DEFAULT_WEIGHTS,
                   help="registry name from 'resnets weights list', the alias 'imagenet' or 'cifar10', a Hugging "
                        "Face Hub repo (hf-hub:ORG/NAME[@REVISION]), a local weights file, or 'none' for random "
                        f"weights (default: {DEFAULT_WEIGHTS})")


def add_precision_options(p: argparse.ArgumentParser, int8_calibrates_on_inputs: bool = True) -> None:
    """``--precision`` and ``--backend`` of the commands that run a model through :func:`resnets.optimize`.

    ``int8_calibrates_on_inputs=False`` for ``eval``, which calibrates on ``--calibration`` images only."""
    int8 = ("int8 calibrates on the input images" if int8_calibrates_on_inputs
            else "int8 needs --calibration DIR")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp32 (eager), or bf16/fp16/int8 through resnets.optimize (compiled; fp16 on CUDA only, "
                        f"int8 on the CPU only; {int8}) (default: fp32)")
    p.add_argument("--backend", choices=BACKEND_CHOICES, default=None, help=BACKEND_HELP)
    add_verbose_option(p)


#: ``--backend`` help, the same for every command that runs a model.
BACKEND_HELP = ("auto (the fastest engine installed for this CPU and precision, from a measured table), torch, "
                "onnxruntime (CPU; fp32 and int8) or openvino (CPU; fp32, bf16 and int8; compiled files cached "
                "under the resnets cache) (default: the eager network at fp32, auto otherwise)")


def add_verbose_option(p: argparse.ArgumentParser) -> None:
    """``--verbose``: say on stderr what runs (model, weights, precision, backend and why, device)."""
    p.add_argument("-v", "--verbose", action="store_true",
                   help="say on stderr which model, precision, backend (and why) and device run (default: quiet)")


def say_what_runs(args: argparse.Namespace, inf) -> None:
    """Print ``inf.describe()`` to stderr under ``--verbose``."""
    if getattr(args, "verbose", False):
        print(f"resnets {args.command}: {inf.describe()}", file=sys.stderr, flush=True)


def model_and_weights(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """``(model, weights)`` from the parsed options: ``--weights none`` means random weights."""
    weights = None if str(args.weights).lower() == "none" else args.weights
    model = args.model
    if model is None and (weights is None or weights in ("imagenet", "cifar10")):
        model = DEFAULT_MODEL if weights != "cifar10" else "resnet20"
    return model, weights
