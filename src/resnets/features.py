"""Turn a folder of images into one feature vector per file, resumably.

Work is written in shards (``OUT.parts/part-NNNNNN.npz``, each atomic) every few seconds as it is done;
a rerun of the same job skips every file already in a shard, so a killed run loses seconds of work.  When
all files are done the shards are joined into ``OUT`` (``.npz``, ``.npy`` + ``OUT.paths.jsonl``: one JSON
string per line, so no file name (newlines, undecodable bytes) can shift the rows; or
``.parquet``) in input order, unreadable files are listed in ``OUT.errors.tsv``, and the shards go.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import BadInput, MissingExtra
from .atomic import atomic_path
from .locks import exclusive
from .pipeline import Inference, run_model
from .progress import progress_bar

FORMATS = (".npz", ".npy", ".parquet")


@dataclass
class FeatureRun:
    out: Path
    images: int
    dim: int
    errors: list[tuple[str, str]]
    resumed: int


def _atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename into place, so ``path`` is either complete or absent."""
    with atomic_path(path) as tmp:
        write(str(tmp))


def check_meta(parts: Path, meta: dict) -> None:
    file = parts / "meta.json"
    if file.exists():
        old = json.loads(file.read_text())
        if old != meta:
            changed = sorted(k for k in meta if old.get(k) != meta[k])
            raise BadInput(f"{parts} holds partial results of a different job (differs in {', '.join(changed)}); "
                             "rerun with the same options, or delete it to start over")
    else:
        parts.mkdir(parents=True, exist_ok=True)
        _atomic_write(file, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=1)))


def _read_parts(parts: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    done: dict[str, np.ndarray] = {}
    errors: dict[str, str] = {}
    for shard in sorted(parts.glob("part-*.npz")):
        with np.load(shard, allow_pickle=False) as z:
            done.update(zip(z["paths"].tolist(), z["features"]))
            errors.update(zip(z["error_paths"].tolist(), z["error_messages"].tolist()))
    return done, errors


def _write_shard(parts: Path, number: int, paths: list[str], feats: list[np.ndarray],
                 errors: list[tuple[str, str]], dim: int) -> None:
    arrays = {
        "paths": np.array(paths, dtype=str),
        "features": np.stack(feats) if feats else np.zeros((0, dim), np.float32),
        "error_paths": np.array([p for p, _ in errors], dtype=str),
        "error_messages": np.array([e for _, e in errors], dtype=str),
    }
    _atomic_write(parts / f"part-{number:06d}.npz", lambda tmp: np.savez(tmp, **arrays))


def _write_output(out: Path, paths: list[str], features: np.ndarray) -> None:
    if out.suffix == ".npz":
        _atomic_write(out, lambda tmp: np.savez(tmp, features=features, paths=np.array(paths, dtype=str)))
    elif out.suffix == ".npy":
        _atomic_write(out, lambda tmp: np.save(tmp, features))
        index = out.with_name(out.name + ".paths.jsonl")  # named after OUT, like OUT.errors.tsv
        _atomic_write(index, lambda tmp: Path(tmp).write_text("".join(json.dumps(p) + "\n" for p in paths)))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({"path": paths, "features": list(features)})
        _atomic_write(out, lambda tmp: pq.write_table(table, tmp))


def extract_features(
    inf: Inference,
    paths: Sequence[Path],
    out: str | os.PathLike,
    batch_size: int = 32,
    workers: int = 2,
    shard_size: int = 1024,
    shard_seconds: float = 10.0,
    progress: bool = True,
    job: dict | None = None,
) -> FeatureRun:
    """Features of ``paths`` through ``inf.model`` (a feature extractor) into ``out``; resumable.

    ``job`` describes the options (model, weights, pooling, layer...) so that a rerun with other
    options refuses to mix its results with the partial ones on disk. A shard is written every
    ``shard_size`` files or ``shard_seconds`` seconds, whichever comes first.
    """
    out = Path(out)
    with held_output(out) as parts:
        keys = [str(p) for p in paths]
        check_names(keys, out)
        check_meta(parts, {"job": job or {}, "files": len(keys)})
        done, errors = _read_parts(parts)
        resumed = len(done) + len(errors)
        todo = [Path(k) for k in keys if k not in done and k not in errors]

        number = len(list(parts.glob("part-*.npz")))
        dim = next(iter(done.values())).shape[0] if done else 0
        shard_paths: list[str] = []
        shard_feats: list[np.ndarray] = []
        shard_errors: list[tuple[str, str]] = []
        bar = progress_bar(len(keys), "features", progress, unit="img", initial=resumed)
        last_write = time.monotonic()
        for batch, all_paths in inf.batches(todo, batch_size, workers):
            shard_errors += [(str(all_paths[i]), e) for i, e in batch.errors]
            if len(batch.indices):
                feats = run_model(inf.model, batch.images).numpy()
                dim = feats.shape[1]
                shard_paths += [str(all_paths[i]) for i in batch.indices.tolist()]
                shard_feats += list(feats)
            bar.update(len(batch.indices) + len(batch.errors))
            due = time.monotonic() - last_write >= shard_seconds
            if len(shard_paths) + len(shard_errors) >= shard_size or (due and (shard_paths or shard_errors)):
                last_write = time.monotonic()
                _write_shard(parts, number, shard_paths, shard_feats, shard_errors, dim)
                done.update(zip(shard_paths, shard_feats))
                errors.update(shard_errors)
                number, shard_paths, shard_feats, shard_errors = number + 1, [], [], []
        bar.close()
        if shard_paths or shard_errors:
            _write_shard(parts, number, shard_paths, shard_feats, shard_errors, dim)
            done.update(zip(shard_paths, shard_feats))
            errors.update(shard_errors)

        return join_results(out, keys, done, errors, parts, resumed)


def check_names(keys: Sequence[str], out: Path) -> None:
    """Refuse, before any work, file names the output format cannot hold (Parquet strings are UTF-8)."""
    if out.suffix == ".parquet":
        require_utf8(keys, "cannot be stored in Parquet; write .npz or .npy instead")


def require_utf8(keys: Sequence[str], why: str) -> None:
    """Refuse, before any work, the first file name that is not valid UTF-8, saying ``why`` that matters."""
    for key in keys:
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            raise BadInput(f"{key!r}: this file name is not valid UTF-8 and {why}") from None


@contextlib.contextmanager
def held_output(out: Path) -> Iterator[Path]:
    """:func:`prepare_output`'s ``OUT.parts`` for a job that alone writes ``out`` while it runs (``OUT.lock``): a
    second job on the same output fails at once naming the first's process, instead of doing all the work again."""
    parts = prepare_output(out)
    with exclusive(out.with_name(out.name + ".lock"), f"another features job is writing {out} right now; let it "
                                                      "finish, or give this one another output"):
        yield parts


def prepare_output(out: Path) -> Path:
    """Check that ``out`` is a format we write (before any work is done) and return its ``OUT.parts`` folder."""
    if out.suffix not in FORMATS:
        raise BadInput(f"output {out} must end in one of {', '.join(FORMATS)}")
    if out.suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise MissingExtra("writing .parquet needs pyarrow: pip install 'resnets[parquet]'; or use .npz or .npy") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    return out.with_name(out.name + ".parts")


def join_results(out: Path, keys: Sequence[str], done: dict[str, np.ndarray], errors: dict[str, str],
                 parts: Path, resumed: int) -> FeatureRun:
    """Write the vectors of ``keys`` in their order to ``out``, the unreadable ones to ``OUT.errors.tsv``,
    then remove ``parts`` (shared by every engine, so that they all write the same files)."""
    good = [k for k in keys if k in done]
    error_file = out.with_name(out.name + ".errors.tsv")
    bad = [(k, errors[k]) for k in keys if k in errors]
    if bad:
        _atomic_write(error_file, lambda tmp: Path(tmp).write_text(
            "path\terror\n" + "".join(f"{json.dumps(p)[1:-1]}\t{' '.join(e.split())}\n" for p, e in bad),
            encoding="utf-8", errors="backslashreplace"))
    else:
        error_file.unlink(missing_ok=True)
    if not good:
        raise BadInput(f"none of the {len(keys)} images could be read; their errors are in {error_file}")
    features = np.stack([done[k] for k in good]).astype(np.float32)
    _write_output(out, good, features)
    shutil.rmtree(parts)
    return FeatureRun(out, len(good), features.shape[1], bad, resumed)
