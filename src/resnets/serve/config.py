"""What one server is configured with: its limits and batching (the ``resnets serve`` options).

Torch- and FastAPI-free, so the command line reads its defaults from here before anything heavy loads.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import BadInput


@dataclass(frozen=True)
class ServeConfig:
    """Limits and batching of one server."""

    max_batch: int = 16  # most images per model call
    max_delay_ms: float = 5.0  # how long the first request of a batch waits for others
    max_queue: int = 64  # requests inside the server at once: read, decoded, waiting or in the model
    max_upload_mb: float = 20.0  # largest request body in MiB
    api_key: str | None = None
    workers: int = 2  # threads decoding and preprocessing images
    precision: str = "fp32"
    backend: str | None = None  # None: the eager network at fp32, "auto" otherwise (resnets.pipeline.load_inference)
    eager_extras: bool = False  # /v1/features and /v1/explain on the eager fp32 network, not as the model runs

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.max_delay_ms < 0 or self.max_queue < 1 or self.workers < 1:
            raise BadInput("need max_batch >= 1, max_delay_ms >= 0, max_queue >= 1 and workers >= 1")
        if self.max_upload_mb <= 0:
            raise BadInput(f"max_upload_mb must be positive, got {self.max_upload_mb}")
        if self.api_key is not None and not self.api_key:
            raise BadInput("api_key must not be empty")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)
