"""``resnets features|predict --engine ray``: a file list through Ray Data, resumable, joined like the local engine.

The list is cut into chunks of ``shard_size`` consecutive files (index ranges of the list, which
``OUT.parts/meta.json`` pins by its hash); the rows of a chunk stream back to this driver and, once the
chunk is complete, are written as ``OUT.parts/chunk-NNNNNN.parquet`` (index, path, features or
predictions, error) atomically. A rerun sends Ray only the chunks without a shard. Rows are keyed by
their index: a row Ray delivers twice (a retried task) is written once, and a chunk that ends up short
is an error, never a silently smaller output.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import ray.data

from ..atomic import atomic_path
from ..errors import BadInput, JobFailed
from ..features import FeatureRun, check_meta, held_output, join_results, require_utf8
from ..inference.table import precision as precision_entry
from ..data.batches import CALIBRATION_IMAGES
from ..predict import Prediction
from ..progress import progress_bar
from .stages import map_features, map_predictions

#: Files per shard: what a crash can cost at most, and the unit of a rerun's work.
SHARD_SIZE = 1024

#: Ray Data's driver threads that can still be inside a Ray call when a job stops early (an error while
#: the batches stream in). ``ray.shutdown()`` under such a call makes Ray end the whole process (exit
#: status 1, "The core worker has already been shutdown"), so they are given time to finish first.
_DATA_THREADS = ("iter_threaded", "StreamingExecutor-", "ray-data-metadata-prefetch")
_DATA_THREADS_GRACE_S = 30.0


def _join_data_threads(before: set[threading.Thread]) -> None:
    """Wait (at most ``_DATA_THREADS_GRACE_S`` in all) for the Ray Data threads started since ``before``."""
    deadline = time.monotonic() + _DATA_THREADS_GRACE_S
    for thread in threading.enumerate():
        if thread not in before and thread.name.startswith(_DATA_THREADS):
            thread.join(max(0.0, deadline - time.monotonic()))


@contextmanager
def connected(address: str | None) -> Iterator[None]:
    """Ray for the length of a job: the running cluster at ``address`` (``auto`` or ``HOST:PORT``), else a
    Ray started on this machine with all its CPUs and stopped afterwards; a session the caller already
    opened (``ray.init``) is used as it is and left open."""
    data_log = logging.getLogger("ray.data")
    level = data_log.level
    data_log.setLevel(logging.WARNING)  # not Ray Data's per-dataset INFO lines: we print what the job did
    try:
        if ray.is_initialized():
            yield
            return
        if address:
            ray.init(address=address, logging_level=logging.WARNING)
        else:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.WARNING)
        before = set(threading.enumerate())
        try:
            yield
        finally:
            _join_data_threads(before)
            ray.shutdown()
    finally:
        data_log.setLevel(level)


@dataclass
class _Plan:
    """Where the models run: the device each actor uses and what it reserves of the cluster."""

    device: str
    actor_cpus: float
    actor_gpus: float


def _plan(device: str, actors: int) -> _Plan:
    """Place ``actors`` models on the connected cluster, leaving CPUs to decode on; say what was found."""
    if actors < 1:
        raise BadInput(f"actors= must be >= 1, got {actors}")
    resources = ray.cluster_resources()
    cpus, gpus = resources.get("CPU", 0), resources.get("GPU", 0)
    if device.startswith("cuda") and not gpus:
        raise BadInput(f"device='{device}': the Ray cluster has no GPU (use device='cpu' or device='auto')")
    gpu = device.startswith("cuda") or (device == "auto" and gpus > 0)
    if actors >= cpus:
        raise BadInput(f"{actors} model actor(s) take {actors} of the Ray cluster's {cpus:g} CPUs and leave none "
                         f"to decode images on; use actors={max(1, int(cpus) - 1)} or a larger cluster")
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    print(f"ray: {nodes} node(s), {cpus:g} CPUs, {gpus:g} GPUs; {actors} model actor(s) on "
          f"{'cuda' if gpu else 'cpu'}", file=sys.stderr)
    ray.data.DataContext.get_current().enable_progress_bars = False  # ours counts images, across reruns too
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # not the warning that they are off
    return _Plan("cuda" if gpu else "cpu", 1, 1 if gpu else 0)


def _list_hash(keys: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for k in keys:
        digest.update(k.encode() + b"\0")
    return digest.hexdigest()


def _shard_size(size: int | None) -> int:
    """``size``, or :data:`SHARD_SIZE` for None (read at call time)."""
    size = SHARD_SIZE if size is None else size
    if size < 1:
        raise BadInput(f"shard_size must be >= 1, got {size}")
    return size


def _bounds(chunk: int, shard_size: int, total: int) -> tuple[int, int]:
    return chunk * shard_size, min(total, (chunk + 1) * shard_size)


def _shard(parts: Path, chunk: int) -> Path:
    return parts / f"chunk-{chunk:06d}.parquet"


def _run_chunks(stage: Callable[[ray.data.Dataset], ray.data.Dataset], keys: Sequence[str], parts: Path,
                shard_size: int, bar) -> Iterator[int]:
    """Run ``stage`` over every chunk of ``keys`` that has no shard in ``parts`` yet; yield each chunk
    number as its shard is written."""
    todo = [c for c in range((len(keys) + shard_size - 1) // shard_size) if not _shard(parts, c).exists()]
    if not todo:
        return
    bounds = {c: _bounds(c, shard_size, len(keys)) for c in todo}
    # Absolute paths: a Ray worker's current folder is not this one (nor on this machine).
    blocks = [pa.table({"index": pa.array(range(lo, hi), pa.int64()),
                        "path": pa.array([os.path.abspath(k) for k in keys[lo:hi]], pa.string())})
              for lo, hi in bounds.values()]
    pending: dict[int, list[pa.Table]] = {c: [] for c in todo}
    seen: dict[int, set[int]] = {c: set() for c in todo}
    for batch in stage(ray.data.from_arrow(blocks)).iter_batches(batch_format="pyarrow", batch_size=None):
        index = batch.column("index").to_numpy()
        for chunk in np.unique(index // shard_size).tolist():
            mine = index // shard_size == chunk
            if chunk not in pending:  # a late duplicate of a chunk already written
                continue
            new = set(index[mine].tolist()) - seen[chunk]
            seen[chunk] |= new
            pending[chunk].append(batch.filter(pa.array(mine)))
            bar.update(len(new))
            lo, hi = bounds[chunk]
            if len(seen[chunk]) == hi - lo:
                _write_shard(_shard(parts, chunk), pending.pop(chunk), keys[lo:hi])
                yield chunk
    if pending:
        lost = sum(bounds[c][1] - bounds[c][0] - len(seen[c]) for c in pending)
        raise JobFailed(f"Ray finished without {lost} of the files of chunk(s) {sorted(pending)}; nothing of "
                           "them was written, rerun to redo them")


def _write_shard(shard: Path, tables: list[pa.Table], keys: Sequence[str]) -> None:
    """A chunk's rows in index order, each once, checked against the file list and named as the list
    names them (errors too, as the local engine words them), as one atomic Parquet file."""
    table = pa.concat_tables(tables).sort_by("index")
    _, first = np.unique(table.column("index").to_numpy(), return_index=True)
    table = table.take(pa.array(first))  # a row delivered twice (a retried task) is kept once
    absolute = table.column("path").to_pylist()
    if absolute != [os.path.abspath(k) for k in keys]:
        raise JobFailed(f"Ray returned rows for {shard.name} whose paths are not those of the file list")
    errors = [e if e is None or not e.startswith(a + ": ") else k + e[len(a):]
              for a, k, e in zip(absolute, keys, table.column("error").to_pylist())]
    table = table.set_column(table.column_names.index("path"), "path", pa.array(list(keys), pa.string()))
    table = table.set_column(table.column_names.index("error"), "error", pa.array(errors, pa.string()))
    with atomic_path(shard) as tmp:
        pq.write_table(table, tmp)


def _read_feature_shards(parts: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """``path -> vector`` of the good files and ``path -> error`` of the bad ones, over every shard."""
    done: dict[str, np.ndarray] = {}
    errors: dict[str, str] = {}
    for shard in sorted(parts.glob("chunk-*.parquet")):
        table = pq.read_table(shard)
        paths, messages = table.column("path").to_pylist(), table.column("error").to_pylist()
        errors.update((p, e) for p, e in zip(paths, messages) if e is not None)
        good = np.array([e is None for e in messages], bool)
        vectors = table.filter(pa.array(good)).column("features").combine_chunks()
        if len(vectors):
            done.update(zip([p for p, ok in zip(paths, good) if ok],
                            vectors.flatten().to_numpy().reshape(len(vectors), -1)))
    return done, errors


def _calibration(keys: Sequence[str], precision: str) -> list[str] | None:
    """The files a calibrating precision (int8) calibrates on, the same ones the local engine takes."""
    return list(keys[:CALIBRATION_IMAGES]) if precision_entry(precision).needs_calibration else None


def extract_features(
    paths: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    weights: str | os.PathLike | None,
    model: str | None = None,
    *,
    pooling: str = "avg",
    layer: int | None = None,
    precision: str = "fp32",
    device: str = "auto",
    backend: str | None = None,
    batch_size: int = 32,
    actors: int = 1,
    address: str | None = None,
    shard_size: int | None = None,
    progress: bool = True,
) -> FeatureRun:
    """:func:`resnets.features.extract_features` on Ray: the same ``out`` (.npz, .npy, .parquet), the same
    ``OUT.errors.tsv``, resumable through Parquet shards in ``OUT.parts/``.

    ``address``: a running cluster (``auto``, ``HOST:PORT``), where every node reads ``paths`` and
    ``weights`` at the same location; None starts Ray on this machine for the job.
    """
    out = Path(out)
    with held_output(out) as parts:
        keys = [str(p) for p in paths]
        if not keys:
            raise BadInput("no image files to extract features from")
        require_utf8(keys, "cannot go through Ray Data; rename it, or use the local engine")
        shard_size = _shard_size(shard_size)
        job = {"engine": "ray", "model": model, "weights": None if weights is None else str(weights),
               "precision": precision, "backend": backend, "pooling": pooling, "layer": layer}
        check_meta(parts, {"job": job, "files": len(keys), "shard_size": shard_size, "list_sha256": _list_hash(keys)})
        resumed = sum(pq.ParquetFile(p).metadata.num_rows for p in parts.glob("chunk-*.parquet"))
        with connected(address):
            plan = _plan(device, actors)

            def stage(ds: ray.data.Dataset) -> ray.data.Dataset:
                return map_features(ds, weights, model, pooling=pooling, layer=layer, precision=precision,
                                    device=plan.device, backend=backend, batch_size=batch_size, actors=actors,
                                    actor_cpus=plan.actor_cpus, actor_gpus=plan.actor_gpus,
                                    calibration=_calibration(keys, precision))

            bar = progress_bar(len(keys), "features", progress, unit="img", initial=resumed)
            for _ in _run_chunks(stage, keys, parts, shard_size, bar):
                pass
            bar.close()
        done, errors = _read_feature_shards(parts)
        return join_results(out, keys, done, errors, parts, resumed)


def _read_predictions(shard: Path) -> Iterator[Prediction]:
    table = pq.read_table(shard)
    for path, top, error in zip(*(table.column(c).to_pylist() for c in ("path", "predictions", "error"))):
        yield Prediction(Path(path), [(t["id"], t["name"], t["probability"]) for t in top or []], error)


def predict_files(
    paths: Sequence[str | os.PathLike],
    weights: str | os.PathLike | None,
    model: str | None = None,
    *,
    top: int = 5,
    precision: str = "fp32",
    device: str = "auto",
    backend: str | None = None,
    batch_size: int = 32,
    actors: int = 1,
    address: str | None = None,
    shard_size: int | None = None,
) -> Iterator[Prediction]:
    """:func:`resnets.predict.predict_files` on Ray: one :class:`~resnets.predict.Prediction` per file, in
    the order of ``paths``, each chunk as soon as it and those before it are done (shards in a
    temporary folder: like the local engine, predict does not resume)."""
    keys = [str(p) for p in paths]
    require_utf8(keys, "cannot go through Ray Data; rename it, or use the local engine")
    shard_size = _shard_size(shard_size)
    with tempfile.TemporaryDirectory(prefix="resnets-ray-") as tmp, connected(address):
        plan = _plan(device, actors)

        def stage(ds: ray.data.Dataset) -> ray.data.Dataset:
            return map_predictions(ds, weights, model, top=top, precision=precision, device=plan.device,
                                   backend=backend, batch_size=batch_size, actors=actors,
                                   actor_cpus=plan.actor_cpus, actor_gpus=plan.actor_gpus,
                                   calibration=_calibration(keys, precision))

        parts, written, following = Path(tmp), set(), 0
        for chunk in _run_chunks(stage, keys, parts, shard_size, progress_bar(len(keys), "predict", False)):
            written.add(chunk)
            while following in written:
                yield from _read_predictions(_shard(parts, following))
                following += 1
