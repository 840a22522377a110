"""``--engine ray`` on a real two-node Ray cluster on this machine, against the local engine.

The cluster (``ray start --head`` plus a second ``ray start --address``, one CPU each) is started once
for the module and stopped by pid: every process whose command line names the module's Ray temp dir
or the cluster's port, and their children (``ray stop`` would stop every Ray on the machine).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray.data")

import pyarrow as pa
import ray

import resnets.ray
from resnets.cli import main
from resnets.data.images import find_images
from resnets.ray import jobs

TEST_TAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg" / "test.tar"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not TEST_TAR.exists(), reason="shared CIFAR-10 data not present")]

WEIGHTS = "resnet20.cifar10"  # embedded in the package: no download
PER_CLASS = 20
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}  # a loopback test cluster: no token


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _stat(pid: int) -> tuple[str, int]:
    """(state, parent pid) of a process; ("X", -1) once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0], int(fields[1])
    except (OSError, IndexError):
        return "X", -1


def _cluster_pids(marks: list[str]) -> set[int]:
    """The processes of our cluster: those naming one of ``marks``, and all their descendants."""
    me = {os.getpid(), os.getppid()}
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in me]
    ours = {p for p in pids if any(m in _cmdline(p) for m in marks)}
    while True:
        children = {p for p in pids if _stat(p)[1] in ours} - ours
        if not children:
            return ours
        ours |= children


def _stop(marks: list[str]) -> None:
    pids = _cluster_pids(marks)
    for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 2.0)):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(_stat(p)[0] not in "ZX" for p in pids):
            time.sleep(0.1)
        pids = {p for p in pids if _stat(p)[0] not in "ZX"}
        if not pids:
            return


@dataclass
class Cluster:
    address: str  # HOST:PORT
    marks: list[str]  # what the command line of each of its processes names


@pytest.fixture(scope="module")
def cluster():
    """A running two-node cluster, one CPU per node, 200 MB object store each."""
    import tempfile

    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    port = _free_port()
    address = f"127.0.0.1:{port}"
    marks = [temp, f":{port} "]
    env = {**os.environ, **RAY_ENV}
    common = ["--num-cpus=1", "--node-ip-address=127.0.0.1", "--object-store-memory=200000000",
              "--disable-usage-stats"]
    try:
        subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "start", "--head", f"--port={port}",
                        "--include-dashboard=false", f"--temp-dir={temp}",
                        f"--ray-client-server-port={_free_port()}", *common],
                       env=env, check=True, capture_output=True, timeout=120)
        subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "start", f"--address={address}",
                        '--resources={"second_node": 1}', *common],
                       env=env, check=True, capture_output=True, timeout=120)
        yield Cluster(address, marks)
    finally:
        _stop(marks)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """200 real CIFAR-10 test JPEGs (20 per class) in <class>/ folders, plus three unreadable files."""
    root = tmp_path_factory.mktemp("ray-images")
    taken: dict[str, int] = {}
    with tarfile.open(TEST_TAR) as tar:
        for member in tar:
            cls = member.name.split("/")[-2] if member.isfile() else None
            if cls is None or taken.get(cls, 0) >= PER_CLASS:
                continue
            taken[cls] = taken.get(cls, 0) + 1
            dest = root / cls / Path(member.name).name
            dest.parent.mkdir(exist_ok=True)
            dest.write_bytes(tar.extractfile(member).read())
    good = sorted(root.glob("*/*.jpg"))
    assert len(good) == 10 * PER_CLASS
    (root / "cat" / "zz_not_an_image.jpg").write_text("not a JPEG")
    (root / "dog" / "zz_empty.jpg").write_bytes(b"")
    (root / "ship" / "zz_truncated.jpg").write_bytes(good[0].read_bytes()[:300])
    return root


@pytest.fixture(scope="module")
def local_reference(images, tmp_path_factory) -> tuple[np.ndarray, list[str], str]:
    """Features, paths and errors file of the local engine, the output the Ray engine must equal."""
    out = tmp_path_factory.mktemp("local") / "f.npz"
    assert main(["features", "--weights", WEIGHTS, "--workers", "0", "--no-progress", str(images),
                 "-o", str(out)]) == 0
    with np.load(out) as z:
        return z["features"], z["paths"].tolist(), Path(f"{out}.errors.tsv").read_text()


@pytest.fixture
def ray_env(monkeypatch):
    for k, v in RAY_ENV.items():
        monkeypatch.setenv(k, v)
    yield
    if ray.is_initialized():
        ray.shutdown()


def test_features_on_a_two_node_cluster_equal_the_local_engine_and_resume_after_a_crash(
        cluster, images, local_reference, ray_env, tmp_path, monkeypatch, capsys):
    ref_features, ref_paths, ref_errors = local_reference
    out = tmp_path / "f.npz"
    command = ["features", "--engine", "ray", "--address", cluster.address, "--weights", WEIGHTS, "--batch-size", "16",
               "--no-progress", str(images), "-o", str(out)]
    # Shards of 50 files (5 for the 203), and a driver that dies writing the third one.
    monkeypatch.setattr(jobs, "SHARD_SIZE", 50)
    write_shard, written = jobs._write_shard, []

    def crash_on_third(shard, tables, keys):
        if len(written) == 2:
            raise RuntimeError("simulated crash of the driver")
        written.append(shard.name)
        write_shard(shard, tables, keys)

    monkeypatch.setattr(jobs, "_write_shard", crash_on_third)
    assert main(command) == 1
    assert "simulated crash" in capsys.readouterr().err
    parts = tmp_path / "f.npz.parts"
    assert sorted(p.name for p in parts.glob("chunk-*.parquet")) == sorted(written)
    assert not out.exists()

    rerun: list[str] = []
    monkeypatch.setattr(jobs, "_write_shard", lambda shard, tables, keys: (rerun.append(shard.name),
                                                                          write_shard(shard, tables, keys)))
    assert main(command) == 0
    captured = capsys.readouterr()
    assert "ray: 2 node(s), 2 CPUs" in captured.err  # both nodes of the cluster took part
    assert "(100 done in an earlier run)" in captured.out
    all_chunks = {f"chunk-{c:06d}.parquet" for c in range(5)}
    assert sorted(rerun) == sorted(all_chunks - set(written))  # the rerun redid only what was missing
    with np.load(out) as z:
        assert z["paths"].tolist() == ref_paths  # same files, same order
        np.testing.assert_allclose(z["features"], ref_features, rtol=1e-5, atol=1e-5)
    assert Path(f"{out}.errors.tsv").read_text() == ref_errors
    assert len(ref_errors.splitlines()) == 4  # header and the three bad files
    assert not parts.exists()


def _actor_pids(marks: list[str]) -> list[int]:
    return [p for p in _cluster_pids(marks) if _cmdline(p).startswith("ray::MapWorker(MapBatches(ModelActor))")
            and _stat(p)[0] not in "ZX"]


def test_killing_the_model_actor_mid_run_loses_and_repeats_nothing(cluster, images, local_reference, ray_env,
                                                                  tmp_path):
    ref_features, ref_paths, _ = local_reference
    paths = ref_paths + [str(images / "cat" / "zz_not_an_image.jpg")]
    half = 100
    go = tmp_path / "go"

    def gate(batch: pa.Table) -> pa.Table:
        """Hold the second half of the files until the test has killed the actor (at most 30 s)."""
        import time as _time
        from pathlib import Path as _Path

        deadline = _time.monotonic() + 30
        while min(batch.column("index").to_pylist()) >= half and not _Path(go).exists():
            if _time.monotonic() > deadline:
                _Path(f"{go}.timed-out").touch()  # the test then fails: the kill was not mid-run
                break
            _time.sleep(0.05)
        return batch

    ray.init(address=cluster.address)
    blocks = [pa.table({"index": list(range(i, min(i + 20, len(paths)))), "path": paths[i:i + 20]})
              for i in range(0, len(paths), 20)]
    ds = ray.data.from_arrow(blocks).map_batches(gate, batch_format="pyarrow", batch_size=None)
    ds = resnets.ray.map_features(ds, WEIGHTS, batch_size=10, actors=1)
    rows: dict[int, list] = {}
    killed = None
    # No prefetching: it would hold back the last block of the first half until the gate opens.
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None, prefetch_batches=0):
        for index, path, vector, error in zip(*(batch.column(c).to_pylist()
                                                for c in ("index", "path", "features", "error"))):
            assert index not in rows, f"row {index} ({path}) delivered twice"
            rows[index] = [path, vector, error]
        if killed is None and len([i for i in rows if i < half]) == half:
            actors = _actor_pids(cluster.marks)
            assert len(actors) == 1, actors
            killed = actors[0]
            os.kill(killed, signal.SIGKILL)
            assert not any(i >= half for i in rows)  # the second half is still to do
            go.touch()
    assert killed is not None and not Path(f"{go}.timed-out").exists()
    assert sorted(rows) == list(range(len(paths)))  # nothing lost
    assert [rows[i][0] for i in range(len(paths))] == paths
    np.testing.assert_allclose(np.array([rows[i][1] for i in range(len(ref_paths))]), ref_features,
                               rtol=1e-5, atol=1e-5)
    assert all(rows[i][2] is None for i in range(len(ref_paths)))
    assert rows[len(paths) - 1][1] is None and "not an image file" in rows[len(paths) - 1][2]
    assert _actor_pids(cluster.marks) and killed not in _actor_pids(cluster.marks)  # Ray restarted the actor


def test_predict_on_the_cluster_equals_the_local_engine(cluster, images, ray_env, capsys):
    common = ["predict", "--weights", WEIGHTS, "--top", "3", "--json", str(images)]
    assert main(common + ["--workers", "0"]) == 1  # 1: some files could not be read
    local = capsys.readouterr()
    assert main(common + ["--engine", "ray", "--address", cluster.address, "--batch-size", "16"]) == 1
    remote = capsys.readouterr()
    local_lines = [json.loads(line) for line in local.out.splitlines()]
    remote_lines = [json.loads(line) for line in remote.out.splitlines()]
    assert [r["path"] for r in remote_lines] == [str(p) for p in find_images(images)]  # every file, in order
    by_path = {r["path"]: r for r in local_lines}
    assert len(by_path) == len(remote_lines) == 203
    for r in remote_lines:
        expected = by_path[r["path"]]
        if "error" in expected:
            assert r == expected
            continue
        assert [p["id"] for p in r["predictions"]] == [p["id"] for p in expected["predictions"]]
        np.testing.assert_allclose([p["probability"] for p in r["predictions"]],
                                   [p["probability"] for p in expected["predictions"]], atol=2e-6)
    skipped = sorted(line for line in remote.err.splitlines() if line.startswith("resnets predict: skipped"))
    assert skipped == sorted(line for line in local.err.splitlines() if line.startswith("resnets predict: skipped"))
    assert len(skipped) == 3


def test_map_features_decodes_bytes_datasets_like_files(cluster, images, local_reference, ray_env):
    ref_features, ref_paths, ref_errors = local_reference
    ray.init(address=cluster.address)
    ds = ray.data.read_binary_files(str(images), include_paths=True)  # columns bytes, path
    out = resnets.ray.map_features(ds, WEIGHTS, bytes_column="bytes", batch_size=16)
    rows = pa.concat_tables(out.iter_batches(batch_format="pyarrow", batch_size=None))
    assert sorted(rows.column_names) == ["error", "features", "path"]  # the bytes are dropped once decoded
    by_path = {p: (f, e) for p, f, e in zip(*(rows.column(c).to_pylist() for c in ("path", "features", "error")))}
    assert sorted(by_path) == sorted(ref_paths + [line.split("\t")[0] for line in ref_errors.splitlines()[1:]])
    np.testing.assert_allclose(np.stack([by_path[p][0] for p in ref_paths]), ref_features, rtol=1e-5, atol=1e-5)
    errors = {p: e for p, (f, e) in by_path.items() if e is not None}
    assert all(by_path[p][0] is None for p in errors)
    # The same words as the local engine's errors file, naming each file by its path.
    assert sorted(f"{p}\t{e}" for p, e in errors.items()) == sorted(ref_errors.splitlines()[1:])



def test_a_family_network_on_the_cluster_equals_the_local_engine(cluster, images, ray_env, capsys, tmp_path):
    """A pre-activation (Keras ResNetV2-layout) file through Ray predict: the same answers as the local engine."""
    import torch
    from test_family import randomize_norms

    import resnets
    from resnets.preprocess import CIFAR10
    from resnets.weights.entry import WeightsEntry, save_safetensors

    kwargs = {"layers": [1, 1, 1, 1], "num_classes": 10}
    torch.manual_seed(0)
    model = randomize_norms(resnets.create_model("resnet50v2", **kwargs))
    entry = WeightsEntry(name="resnet50v2.test", model="resnet50v2", url=None, sha256=None,
                         file_format="safetensors", model_kwargs=kwargs, preprocessing=CIFAR10, classes="cifar10")
    weights = save_safetensors(model.state_dict(), tmp_path / "v2.safetensors", entry)
    common = ["predict", "--weights", str(weights), "--top", "2", "--json", str(images)]
    assert main(common + ["--workers", "0"]) == 1  # 1: the three unreadable files
    local = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert main(common + ["--engine", "ray", "--address", cluster.address, "--batch-size", "16"]) == 1
    remote = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_path = {r["path"]: r for r in local}
    assert len(remote) == len(by_path) == 203
    for r in remote:
        expected = by_path[r["path"]]
        if "error" in expected:
            continue
        assert [p["id"] for p in r["predictions"]] == [p["id"] for p in expected["predictions"]]
        np.testing.assert_allclose([p["probability"] for p in r["predictions"]],
                                   [p["probability"] for p in expected["predictions"]], atol=2e-6)
