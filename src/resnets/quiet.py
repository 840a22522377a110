"""Known-harmless third-party warnings, silenced inside the package's own optimize/export/quantize calls.

torch, torchao and inductor warn about things a user of this package can neither act on nor avoid (a
deprecation inside torchao, a max-pool torchao chooses not to quantize, a missing CUDA runtime on CPU
machines). :func:`quiet_third_party` drops exactly those messages, and only while one of this package's calls
runs: a filter scoped to our calls, never a global one, so the user's own code warns as before.
``resnets --debug`` (or ``RESNETS_DEBUG=1``) shows them again.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

#: ``warnings.warn`` messages (regular expressions matched at the start of the message).
KNOWN_WARNINGS: tuple[str, ...] = (
    r"The input of maxpool2d is not quantized",  # torchao's X86InductorQuantizer, ImageNet stem's max-pool
    r"To copy construct from a tensor",  # inductor's int8 lowering (mkldnn_lowerings.py)
    r"No complete tensor found in the group",  # torch.export.save of weights sharing storage
)
#: Log records: logger name -> message pattern (``logging`` records, printed by torch's own handler).
KNOWN_LOG_RECORDS: dict[str, str] = {
    "torch.utils._pytree": r".*KernelPreference.*is an Enum subclass",  # torchao's import, deprecated API
    "torch.utils.cpp_extension": r"No CUDA runtime is found",  # every inductor compile on a CPU-only machine
}


def debug_enabled() -> bool:
    """Whether third-party warnings are shown (``RESNETS_DEBUG`` set to anything but ``0``, as ``--debug`` does)."""
    return os.environ.get("RESNETS_DEBUG", "0") not in ("", "0")


class _DropKnown(logging.Filter):
    def __init__(self, pattern: str) -> None:
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.match(record.getMessage())


@contextmanager
def quiet_third_party() -> Iterator[None]:
    """Drop the known-harmless third-party warnings and log records raised inside the ``with`` block."""
    if debug_enabled():
        yield
        return
    filters = [(logging.getLogger(name), _DropKnown(pattern)) for name, pattern in KNOWN_LOG_RECORDS.items()]
    with warnings.catch_warnings():
        for pattern in KNOWN_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        for logger, f in filters:
            logger.addFilter(f)
        try:
            yield
        finally:
            for logger, f in filters:
                logger.removeFilter(f)
