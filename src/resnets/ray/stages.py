"""The two Ray Data stages: decoding as CPU tasks, the model in a pool of actors.

Decoding is the local engine's own (:class:`resnets.data.images.ImageFiles` with the weights'
preprocessing), one Ray task per block on any CPU of the cluster; the decoded tensors travel as raw
float32 bytes so that a batch may mix good and bad files (a bad row has no pixels and an ``error``).
Each model actor loads its model once with :func:`resnets.pipeline.load_inference` and answers
batches like :func:`resnets.pipeline.run_model` does locally. Rows are never dropped: a bad file
comes out with ``features``/``predictions`` null and ``error`` set.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import ray.data
import torch
from PIL import Image

from ..errors import BadInput
from ..classes import decode_predictions
from ..data.images import ImageFiles, ImageLoadError, ImageSample, collate_images, load_img
from ..pipeline import load_inference, run_model
from ..preprocess import Preprocessing

#: Columns the stages add; an input dataset that has one of them is refused.
ERROR_COLUMN = "error"
_PIXELS, _SHAPE = "_resnets_pixels", "_resnets_shape"
PREDICTION_TYPE = pa.list_(pa.struct([("id", pa.string()), ("name", pa.string()), ("probability", pa.float64())]))


class _EncodedImage:
    """An image given as bytes (``ray.data.read_binary_files``), named by its path in errors."""

    def __init__(self, path: str, data: bytes | None) -> None:
        self.path, self.data = path, data

    def load(self) -> Image.Image:
        if not self.data:  # as load_img words it for an empty file
            raise ImageLoadError(self.path, "empty file (0 bytes)" if self.data is not None else "no bytes (null)")
        try:
            return load_img(io.BytesIO(self.data))
        except ImageLoadError as e:  # load_img names in-memory data "<bytes>"
            raise ImageLoadError(self.path, e.reason) from None


def decode_batch(batch: pa.Table, preprocessing: Preprocessing, path_column: str, bytes_column: str | None,
                 output_column: str) -> pa.Table:
    """``batch`` plus the preprocessed pixels of each row's image, or its error (a Ray task)."""
    for name in (output_column, ERROR_COLUMN):
        if name in batch.column_names:
            raise BadInput(f"the dataset already has a column {name!r}, which resnets.ray would overwrite; "
                             "rename it first")
    paths = [str(p) for p in batch.column(path_column).to_pylist()]
    items = paths if bytes_column is None else [
        _EncodedImage(p, b) for p, b in zip(paths, batch.column(bytes_column).to_pylist())]
    files = ImageFiles(items, preprocessing)
    if bytes_column is not None:  # decoded: the pixels replace the file's bytes
        batch = batch.drop_columns([bytes_column])
    samples = [files[i] for i in range(len(files))]
    arrays = [None if s.error is not None else s.image.numpy().astype(np.float32, copy=False) for s in samples]
    pixels = [None if a is None else a.tobytes() for a in arrays]
    shapes = [None if a is None else list(a.shape) for a in arrays]
    errors = [s.error for s in samples]
    return (batch.append_column(_PIXELS, pa.array(pixels, pa.large_binary()))
            .append_column(_SHAPE, pa.array(shapes, pa.list_(pa.int32())))
            .append_column(ERROR_COLUMN, pa.array(errors, pa.string())))


class ModelActor:
    """One model per actor, loaded once; ``task`` is ``"features"`` or ``"predict"`` (top ``top`` classes)."""

    def __init__(self, task: str, top: int, load: dict[str, Any]) -> None:
        self.task, self.top = task, top
        self.inf = load_inference(**load)

    def __call__(self, batch: pa.Table) -> pa.Table:
        pixels = batch.column(_PIXELS).to_pylist()
        shapes = batch.column(_SHAPE).to_pylist()
        samples = [ImageSample(torch.from_numpy(np.frombuffer(b, np.float32).reshape(s).copy()), i, None)
                   for i, (b, s) in enumerate(zip(pixels, shapes)) if b is not None]
        images = collate_images(samples)
        outputs = run_model(self.inf.model, images.images)
        good = np.zeros(len(pixels), bool)
        good[images.indices.numpy()] = True
        batch = batch.drop_columns([_PIXELS, _SHAPE])
        error_at = batch.column_names.index(ERROR_COLUMN)  # the answer goes before "error"
        if self.task == "features":
            return batch.add_column(error_at, "features", _vectors(outputs.numpy(), good))
        return batch.add_column(error_at, "predictions", self._predictions(outputs, good))

    def _predictions(self, outputs: torch.Tensor, good: np.ndarray) -> pa.Array:
        """Top classes as ``predict_files`` names them (softmax unless the model ends in its own activation)."""
        answers = iter([])
        if len(outputs):
            answers = iter(decode_predictions(self.inf.probabilities(outputs), self.top, self.inf.classes,
                                                  multi_label=self.inf.multi_label))
        rows = [[{"id": i, "name": n, "probability": float(p)} for i, n, p in next(answers)] if ok else None
                for ok in good]
        return pa.array(rows, PREDICTION_TYPE)


def _vectors(features: np.ndarray, good: np.ndarray) -> pa.Array:
    """``features`` (one row per good image) as a list<float32> column, null where ``good`` is False."""
    dim = features.shape[1] if features.ndim == 2 else 0
    offsets = np.zeros(len(good) + 1, np.int32)
    offsets[1:] = np.cumsum(good * dim)
    values = pa.array(features.reshape(-1).astype(np.float32, copy=False))
    return pa.ListArray.from_arrays(pa.array(offsets), values, mask=pa.array(~good))


def _map(ds: ray.data.Dataset, task: str, top: int, weights: str | os.PathLike | None, model: str | None,
         features: tuple[str, int | None] | None, precision: str, device: str, backend: str, batch_size: int,
         actors: int, actor_cpus: float, actor_gpus: float, path_column: str, bytes_column: str | None,
         calibration: Sequence[str | os.PathLike] | None) -> ray.data.Dataset:
    if batch_size < 1 or actors < 1:
        raise BadInput(f"batch_size and actors must be >= 1, got {batch_size} and {actors}")
    # Loaded here once in fp32 for the recipe (and to fail early on bad weights); each actor loads its own.
    local = load_inference(model, weights, "fp32", features=features, device="cpu", progress=False)
    decoded = ds.map_batches(
        decode_batch, batch_format="pyarrow", batch_size=batch_size, num_cpus=1,
        fn_kwargs={"preprocessing": local.preprocessing, "path_column": path_column, "bytes_column": bytes_column,
                   "output_column": "features" if task == "features" else "predictions"},
    ).repartition(target_num_rows_per_block=batch_size)
    # Blocks of one model batch each; the repartition also keeps Ray from fusing decoding into the
    # actors, so that it runs as tasks on every free CPU of the cluster while the actors run models.
    if weights is not None and os.path.exists(weights):  # a file: the actors' current folder is not ours
        weights = os.path.abspath(weights)
    load = {"model_name": local.name, "weights": None if weights is None else str(weights), "precision": precision,
            "features": features, "device": "cuda" if actor_gpus and device.startswith("cuda") else device,
            "backend": backend, "progress": False,
            "calibration": [Path(p).absolute() for p in calibration] if calibration is not None else None}
    return decoded.map_batches(
        ModelActor, batch_format="pyarrow", batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=actor_cpus, num_gpus=actor_gpus or None,
        fn_constructor_kwargs={"task": task, "top": top, "load": load})


def map_features(
    ds: ray.data.Dataset,
    weights: str | os.PathLike | None,
    model: str | None = None,
    *,
    pooling: str = "avg",
    layer: int | None = None,
    precision: str = "fp32",
    device: str = "cpu",
    backend: str | None = None,
    batch_size: int = 32,
    actors: int = 1,
    actor_cpus: float = 1,
    actor_gpus: float = 0,
    path_column: str = "path",
    bytes_column: str | None = None,
    calibration: Sequence[str | os.PathLike] | None = None,
) -> ray.data.Dataset:
    """``ds`` with a ``features`` column (list<float32>, pooled output of stage ``layer``) and an ``error``
    column (null for good images); a file that cannot be read keeps its row with null features.

    Images are read from the files named in ``path_column`` (visible to every node), or decoded from
    ``bytes_column`` (e.g. ``ray.data.read_binary_files(..., include_paths=True)``, ``bytes_column="bytes"``;
    that column is dropped once decoded, the path names the file in errors).
    The architecture, classes and preprocessing come from ``weights`` (a registry name or a file every
    node can read). ``actors`` model copies run at once, each holding ``actor_cpus`` CPUs and
    ``actor_gpus`` GPUs; ``precision``/``backend`` optimise each copy as :func:`resnets.optimize` does
    (int8 calibrates on ``calibration``, image files). Lazy, like every Ray dataset: nothing runs until
    it is consumed (``write_parquet``, ``iter_batches``...).
    """
    return _map(ds, "features", 0, weights, model, (pooling, layer), precision, device, backend, batch_size,
                actors, actor_cpus, actor_gpus, path_column, bytes_column, calibration)


def map_predictions(
    ds: ray.data.Dataset,
    weights: str | os.PathLike | None,
    model: str | None = None,
    *,
    top: int = 5,
    precision: str = "fp32",
    device: str = "cpu",
    backend: str | None = None,
    batch_size: int = 32,
    actors: int = 1,
    actor_cpus: float = 1,
    actor_gpus: float = 0,
    path_column: str = "path",
    bytes_column: str | None = None,
    calibration: Sequence[str | os.PathLike] | None = None,
) -> ray.data.Dataset:
    """``ds`` with a ``predictions`` column (the ``top`` classes as ``{id, name, probability}``, best
    first, as ``resnets predict --json`` gives them) and an ``error`` column; see :func:`map_features`."""
    if top < 1:
        raise BadInput(f"top must be >= 1, got {top}")
    return _map(ds, "predict", top, weights, model, None, precision, device, backend, batch_size, actors,
                actor_cpus, actor_gpus, path_column, bytes_column, calibration)
