"""Progress for long loops: a bar where a person watches, a plain line now and then in a log, or nothing.

A tqdm bar redraws itself with carriage returns, which is right on a terminal and wrong in a log file or
a CI job (``eval`` over 10,000 images left 19 KB of them). :func:`progress_bar` gives a tqdm bar when
stderr is a terminal, and otherwise an object with the same methods that writes one ordinary line at most
every :data:`LOG_INTERVAL_S` seconds.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from tqdm import tqdm

#: Seconds between two progress lines when stderr is not a terminal.
LOG_INTERVAL_S = 30.0


class LogLines:
    """tqdm's ``update``/``set_postfix``/``close`` for logs: ``desc: n/total unit (p%), r unit/s`` lines on stderr,
    the first after :data:`LOG_INTERVAL_S` seconds and then at most one per interval (short loops print nothing)."""

    def __init__(self, total: int | None, desc: str, unit: str = "it", initial: int = 0) -> None:
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.start = self.last = time.monotonic()
        self.initial = initial
        self.postfix = ""

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= LOG_INTERVAL_S:
            self.last = now
            rate = (self.n - self.initial) / max(now - self.start, 1e-9)
            done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
            share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
            print(f"{self.desc}: {done} {self.unit}{share}, {rate:.1f} {self.unit}/s{self.postfix}",
                  file=sys.stderr, flush=True)

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        self.postfix = "".join(f", {k} {v}" for k, v in values.items())

    def close(self) -> None:
        """Nothing to clean up: lines are complete when written."""

    def __enter__(self) -> LogLines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (whose stderr is no terminal but shows a live bar)."""
    shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
    return type(shell).__name__ == "ZMQInteractiveShell"


def progress_bar(total: int | None, desc: str, enabled: bool = True, unit: str = "it", initial: int = 0,
                 **tqdm_options: Any) -> tqdm | LogLines:
    """A tqdm bar on a terminal or in a Jupyter notebook (``tqdm_options`` go to it), :class:`LogLines` when
    stderr is redirected, and a silent tqdm when ``enabled`` is False (``--no-progress``)."""
    if enabled and _in_notebook():
        from tqdm.auto import tqdm as notebook_tqdm  # a widget where ipywidgets is installed, else text

        return notebook_tqdm(total=total, desc=desc, unit=unit, initial=initial, **tqdm_options)
    if enabled and not sys.stderr.isatty():
        return LogLines(total, desc, unit, initial)
    return tqdm(total=total, desc=desc, unit=unit, initial=initial, disable=not enabled, **tqdm_options)
