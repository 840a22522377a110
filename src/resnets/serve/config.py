"""What one server is configured with: its limits and batching (the ``resnets serve`` options).

Torch- and FastAPI-free, so the command line reads its defaults from here before anything heavy loads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from pathlib import Path

from ..errors import BadInput


@dataclass(frozen=True)
class ServeConfig:
    """Limits and batching of one server.

    The time limits keep a client that stalls from holding a connection, a body buffer or a place in the
    queue: a request's headers must be complete within ``header_timeout`` seconds of connecting (or of the
    previous answer on a kept-alive connection); its body may go ``body_timeout`` seconds without data, and
    once it has taken that long it must average ``min_upload_rate`` KiB/s. A request counts against
    ``max_queue`` only once its body is in, so uploads that stall never lock other clients out.
    ``decode_memory_mb`` bounds the memory of the images decoded at once across all requests (estimated from
    their headers), which sets the service's memory peak.
    """

    max_batch: int = 16  # most images per model call
    max_delay_ms: float = 5.0  # how long the first request of a batch waits for others
    max_queue: int = 64  # requests inside the server at once, counted once their body is in
    max_upload_mb: float = 20.0  # largest request body in MiB
    api_key: str | None = None
    workers: int = 2  # threads decoding and preprocessing images
    precision: str = "fp32"
    backend: str | None = None  # None: the eager network at fp32, "auto" otherwise (resnets.pipeline.load_inference)
    eager_extras: bool = False  # /v1/features and /v1/explain on the eager fp32 network, not as the model runs
    header_timeout: float = 10.0  # seconds to receive a request's headers
    keep_alive: float = 5.0  # seconds an idle kept-alive connection stays open
    body_timeout: float = 10.0  # seconds a body may go without data; also the grace before min_upload_rate
    min_upload_rate: float = 4.0  # KiB/s a body must average once it has taken body_timeout
    decode_memory_mb: float = 1024.0  # MiB for decoding images at once, all requests together (more for one: 413)

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.max_delay_ms < 0 or self.max_queue < 1 or self.workers < 1:
            raise BadInput("need max_batch >= 1, max_delay_ms >= 0, max_queue >= 1 and workers >= 1")
        for f in fields(self):
            if f.name in POSITIVE and not getattr(self, f.name) > 0:
                raise BadInput(f"{f.name} must be positive, got {getattr(self, f.name)}")
        if self.api_key is not None and not self.api_key:
            raise BadInput("api_key must not be empty")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def decode_memory_bytes(self) -> int:
        return int(self.decode_memory_mb * 1024 * 1024)


#: The limits that must be above zero.
POSITIVE = ("max_upload_mb", "header_timeout", "keep_alive", "body_timeout", "min_upload_rate", "decode_memory_mb")


#: The names a model may be served under (one segment of a URL path).
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
#: The weights that name no model of their own: the aliases and random weights.
UNNAMED_WEIGHTS = ("", "none", "imagenet", "cifar10")


def served_name(weights: str | None, network: str | None) -> str:
    """The name a model is served under when none is given: its weights' registry or Hub name, or their file's
    stem; the network's name for the aliases (``imagenet``, ``cifar10``) and random weights."""
    name = "" if weights is None else str(weights)
    if name.startswith("hf-hub:"):
        name = name.removeprefix("hf-hub:").split("@")[0].rsplit("/", 1)[-1]
    elif "/" in name or "\\" in name or Path(name).suffix in (".safetensors", ".pt", ".pth", ".h5"):
        name = Path(name).stem
    if name.lower() in UNNAMED_WEIGHTS:
        name = network or ""
    return re.sub(r"[^A-Za-z0-9._-]", "-", name).lstrip("._-") or "model"


def check_name(name: str) -> str:
    """``name`` if a model may be served under it, else BadInput naming the rule."""
    if not MODEL_NAME.fullmatch(name):
        raise BadInput(f"a model name is letters, digits, '.', '_' and '-', starting with a letter or digit; got "
                       f"{name!r}")
    return name
