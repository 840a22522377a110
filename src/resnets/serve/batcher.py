"""Dynamic batching: requests that arrive within ``max_delay`` share one model call of up to ``max_batch``.

The model runs in one dedicated thread (one call at a time: the model already uses every core, and
a compiled model must not be entered twice at once). The event loop only enqueues inputs and awaits
futures, so it never blocks on the model. A request whose future was cancelled (its client went
away) is skipped when a batch is formed and its answer dropped if it was already computed, so it
never costs the other requests of its batch anything.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import torch

from ..errors import BadInput, ResnetsError
from ..pipeline import run_model
from .metrics import Metrics

log = logging.getLogger("resnets.serve")

#: Finds the module that serves a key (e.g. the classifier, or a feature extractor); called in the model thread.
ModelLookup = Callable[[Hashable], torch.nn.Module]


class QueueFull(ResnetsError):
    """The bounded queue is full: the caller should answer 503 and ask the client to retry later."""


class Closed(ResnetsError):
    """The batcher is shutting down and takes no new work."""


@dataclass
class BatchResult:
    """One request's output row and what it cost: seconds waiting for its batch and in the model call."""

    output: torch.Tensor
    queue_s: float
    model_s: float
    batch_size: int


@dataclass
class _Item:
    key: Hashable
    x: torch.Tensor
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    enqueued: float = field(default_factory=time.monotonic)


def _resolve(future: asyncio.Future, result: BatchResult | None, error: BaseException | None) -> None:
    """Runs on the event loop: the future may have been cancelled meanwhile (client gone), then it is left alone."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class Batcher:
    """Collects single inputs into batches for a model thread; bounded, drainable, cancellation-safe.

    Inputs are grouped by ``key`` (which model, and the input's shape), so a batch is always one
    model on same-shaped inputs. ``max_queue`` bounds the inputs waiting (memory never grows with
    load: :meth:`submit` raises :class:`QueueFull` instead). ``warmup`` batches run once at start
    (a compiled model compiles on them), before :attr:`ready` is set.
    """

    def __init__(self, models: ModelLookup, max_batch: int = 16, max_delay_s: float = 0.005,
                 max_queue: int = 64, metrics: Metrics | None = None) -> None:
        if max_batch < 1 or max_delay_s < 0 or max_queue < 1:
            raise BadInput(f"need max_batch >= 1, max_delay_s >= 0 and max_queue >= 1, got {max_batch}, "
                             f"{max_delay_s}, {max_queue}")
        self.models, self.max_batch, self.max_delay_s, self.max_queue = models, max_batch, max_delay_s, max_queue
        self.metrics = metrics or Metrics()
        self.ready = threading.Event()
        self.error: BaseException | None = None  # a failed warm-up, reported by /readyz
        self._queue: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None

    def start(self, warmup: Sequence[tuple[Hashable, torch.Tensor]] = ()) -> None:
        """Start the model thread; it first runs the ``warmup`` ``(key, batch)`` pairs, then serves."""
        self._thread = threading.Thread(target=self._serve, args=(list(warmup),), name="resnets-model", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        """Inputs waiting for a model call."""
        return len(self._queue)

    async def submit(self, key: Hashable, x: torch.Tensor) -> BatchResult:
        """The model's output for one input ``x`` (no batch dimension), computed in some batch."""
        loop = asyncio.get_running_loop()
        item = _Item(key, x, loop.create_future(), loop)
        with self._cond:
            if self._closing:
                raise Closed("the server is shutting down")
            if len(self._queue) >= self.max_queue:
                raise QueueFull(f"the queue is full ({self.max_queue} requests waiting)")
            self._queue.append(item)
            self._cond.notify()
        return await item.future

    def close(self, timeout: float | None = None) -> None:
        """Stop taking work, finish everything already queued, then stop the model thread."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def _serve(self, warmup: list[tuple[Hashable, torch.Tensor]]) -> None:
        try:
            for key, batch in warmup:
                run_model(self.models(key), batch)
        except Exception as e:  # noqa: BLE001 - /readyz and the log report it; requests get the model's errors
            log.exception("warm-up failed")
            self.error = e
        else:
            self.ready.set()
        while (batch := self._next_batch()) is not None:
            if batch:
                self._run(batch)

    def _next_batch(self) -> list[_Item] | None:
        """Wait for work, then up to ``max_delay_s`` (from the oldest input) for a full batch; None: closed."""
        with self._cond:
            while not self._queue:
                if self._closing:
                    return None
                self._cond.wait()
            key = self._queue[0].key
            deadline = self._queue[0].enqueued + self.max_delay_s
            while not self._closing and sum(i.key == key for i in self._queue) < self.max_batch:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch, rest = [], deque()
            for item in self._queue:
                if item.key == key and len(batch) < self.max_batch:
                    batch.append(item)
                else:
                    rest.append(item)
            self._queue = rest
        live = [item for item in batch if not item.future.cancelled()]
        self.metrics.cancelled.inc(len(batch) - len(live))
        return live

    def _run(self, batch: list[_Item]) -> None:
        start = time.monotonic()
        try:
            out = run_model(self.models(batch[0].key), torch.stack([item.x for item in batch]))
        except Exception as e:  # noqa: BLE001 - every request of the batch gets the error, the thread lives on
            log.exception("model call failed on a batch of %d", len(batch))
            for item in batch:
                item.loop.call_soon_threadsafe(_resolve, item.future, None, e)
            return
        model_s = time.monotonic() - start
        self.metrics.batch_size.observe(len(batch))
        for item, row in zip(batch, out):
            result = BatchResult(row, start - item.enqueued, model_s, len(batch))
            item.loop.call_soon_threadsafe(_resolve, item.future, result, None)
