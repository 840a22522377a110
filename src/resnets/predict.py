"""Classify image files: top-k classes with probabilities, per file, bad files reported not dropped."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .classes import decode_predictions
from .pipeline import Inference, run_model


@dataclass
class Prediction:
    """The answer for one file: ``top`` as ``(id, name, probability)``, or ``error`` when it could not be read."""

    path: Path
    top: list[tuple[str, str, float]]
    error: str | None = None

    def to_dict(self) -> dict:
        if self.error is not None:
            return {"path": str(self.path), "error": self.error}
        return {"path": str(self.path),
                "predictions": [{"id": i, "name": n, "probability": round(p, 6)} for i, n, p in self.top]}


def predict_files(inf: Inference, paths: Sequence[Path], top: int = 5, batch_size: int = 32,
                  workers: int = 2) -> Iterator[Prediction]:
    """Predictions for ``paths`` in order of completion (each batch in file order)."""
    for batch, all_paths in inf.batches(paths, batch_size, workers):
        for index, message in batch.errors:
            yield Prediction(all_paths[index], [], message)
        if not len(batch.indices):
            continue
        probs = inf.probabilities(run_model(inf.model, batch.images))
        answers = decode_predictions(probs, top, inf.classes, multi_label=inf.multi_label)
        for index, answer in zip(batch.indices.tolist(), answers):
            yield Prediction(all_paths[index], answer)
