"""The service's metrics in Prometheus' text exposition format (version 0.0.4), thread-safe, no dependency.

Four kinds are enough here: counters (optionally by label values), histograms with fixed buckets,
and gauges read at scrape time.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import Counter as _Tally
from collections.abc import Callable, Sequence

from ..errors import BadInput


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def _labels(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    escaped = (str(v).replace("\\", r"\\").replace('"', r"\"").replace("\n", r"\n") for v in values)
    return "{" + ",".join(f'{n}="{v}"' for n, v in zip(names, escaped)) + "}"


class Counter:
    """A monotonically increasing count, by label values if ``labels`` are named."""

    def __init__(self, name: str, help: str, labels: Sequence[str] = ()) -> None:
        self.name, self.help, self.labels = name, help, tuple(labels)
        self._counts: _Tally = _Tally()
        self._lock = threading.Lock()

    def inc(self, amount: float = 1, *values: str) -> None:
        if len(values) != len(self.labels):
            raise BadInput(f"{self.name} takes labels {self.labels}, got {values}")
        with self._lock:
            self._counts[tuple(values)] += amount

    def value(self, *values: str) -> float:
        with self._lock:
            return self._counts[tuple(values)]

    def render(self) -> list[str]:
        with self._lock:
            counts = sorted(self._counts.items()) or ([((), 0)] if not self.labels else [])
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        return lines + [f"{self.name}{_labels(self.labels, k)} {_number(v)}" for k, v in counts]


class Histogram:
    """Observations counted into cumulative ``le`` buckets, with their sum and count."""

    def __init__(self, name: str, help: str, buckets: Sequence[float]) -> None:
        self.name, self.help = name, help
        self.bounds = sorted(float(b) for b in buckets)
        self._counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound (+Inf)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        with self._lock:
            self._counts[bisect.bisect_left(self.bounds, value)] += 1
            self._sum += value

    @property
    def count(self) -> int:
        with self._lock:
            return sum(self._counts)

    @property
    def sum(self) -> float:
        with self._lock:
            return self._sum

    def render(self) -> list[str]:
        with self._lock:
            counts, total = list(self._counts), self._sum
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        running = 0
        for bound, n in zip([*self.bounds, math.inf], counts):
            running += n
            lines.append(f'{self.name}_bucket{{le="{_number(bound)}"}} {running}')
        return lines + [f"{self.name}_sum {_number(total)}", f"{self.name}_count {running}"]


class Gauge:
    """A value read when scraped (e.g. the queue depth), so it is never stale."""

    def __init__(self, name: str, help: str, read: Callable[[], float]) -> None:
        self.name, self.help, self.read = name, help, read

    def render(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} gauge", f"{self.name} {_number(self.read())}"]


class Metrics:
    """What ``GET /metrics`` shows: requests by endpoint and status, batch sizes, latency, queue depth."""

    def __init__(self) -> None:
        self.requests = Counter("resnets_requests_total", "HTTP requests answered, by endpoint and status code",
                                ("endpoint", "status"))
        self.batch_size = Histogram("resnets_batch_size", "inputs per model call",
                                    (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 128))
        self.latency = Histogram("resnets_request_latency_seconds",
                                 "time from request to response, /v1 and /v2 inference",
                                 (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1, 2.5, 5, 10))
        self.cancelled = Counter("resnets_cancelled_total",
                                 "queued inputs dropped before their model call because the client went away")
        self.gauges: list[Gauge] = []

    def gauge(self, name: str, help: str, read: Callable[[], float]) -> None:
        self.gauges.append(Gauge(name, help, read))

    def render(self) -> str:
        parts = [self.requests, self.batch_size, self.latency, self.cancelled, *self.gauges]
        return "\n".join(line for part in parts for line in part.render()) + "\n"
