"""WebDataset shards (resnets.data.shards, data.shard_writer, ``resnets data shards``): every image once with its
label, read back by webdataset itself; a seeded order that resumes mid-epoch; ranks and workers covering it once."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from PIL import Image

from resnets.cli import main
from resnets.data.shard_writer import write_shards
from resnets.data.shards import ShardStream, read_index
from resnets.data.source import read_split
from resnets.errors import BadInput

CLASSES = ("cat", "dog", "owl")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """``train/<class>/<i>.jpg``: 23 distinct JPEGs; returns {sha256 of the file: label}."""
    root = tmp_path_factory.mktemp("shards") / "data"
    truth = {}
    for i in range(23):
        label = i % 3
        path = root / "train" / CLASSES[label] / f"{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (10 * i, 80 * label, 5)).save(path, "JPEG")
        truth[hashlib.sha256(path.read_bytes()).hexdigest()] = label
    (root / "train" / "cat" / ".DS_Store").write_bytes(b"\x00")
    return root, truth


@pytest.fixture(scope="module")
def shards(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    write_shards(folder[0], out, shard_size=4)
    return out


def _digest(sample):
    return hashlib.sha256(sample[0]).hexdigest(), sample[1]


def test_every_image_once_with_its_label(folder, shards):
    root, truth = folder
    index = read_index(shards / "train.json")
    assert index.classes == CLASSES and index.counts == (4, 4, 4, 4, 4, 3)
    streamed = [_digest(s) for s in ShardStream(index)]
    assert sorted(streamed) == sorted(truth.items())
    listed = read_split(shards, "train")  # the shard folder as a listed data set (memory mode, eval)
    assert sorted((hashlib.sha256(r.encoded()).hexdigest(), int(y)) for r, y in zip(listed.images, listed.labels)) \
        == sorted(truth.items())
    assert listed.classes == CLASSES


def test_webdataset_reads_our_shards(folder, shards):
    import webdataset as wds

    urls = [str(p) for p in read_index(shards / "train.json").shards]
    samples = [(hashlib.sha256(s["jpg"]).hexdigest(), int(s["cls"])) for s in wds.WebDataset(urls, shardshuffle=False)]
    assert sorted(samples) == sorted(folder[1].items())


def test_the_cli_writes_atomically_named_shards(folder, tmp_path, capsys):
    assert main(["data", "shards", str(folder[0]), str(tmp_path / "s"), "--shard-size", "10", "--no-progress"]) == 0
    assert "23 images" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [
        "train-000000.tar", "train-000001.tar", "train-000002.tar", "train.json"]
    assert json.loads((tmp_path / "s" / "train.json").read_text())["images"] == 23
    with pytest.raises(SystemExit, match="2"):
        main(["data", "shards", str(folder[0]), str(tmp_path / "t"), "--shard-size", "0"])


def _epoch(stream, batch_size, workers):
    loader = torch.utils.data.DataLoader(stream, batch_size=batch_size, num_workers=workers,
                                         collate_fn=lambda batch: [_digest(s) for s in batch])
    return [s for batch in loader for s in batch]


@pytest.mark.parametrize("workers", [0, 2])
def test_mid_epoch_resume_yields_exactly_the_rest(shards, workers):
    stream = ShardStream(shards / "train.json", seed=3)
    stream.set_epoch(1)
    full = _epoch(stream, 3, workers)
    assert len(full) == 23 and len(set(full)) == 23
    for consumed in (3, 9, 15, 18, 21):
        resumed = ShardStream(shards / "train.json", seed=3)
        resumed.set_epoch(1)
        resumed.resume(consumed, batch_size=3, workers=workers)
        assert _epoch(resumed, 3, workers) == full[consumed:]
    stream.set_epoch(2)
    assert _epoch(stream, 3, workers) != full  # another epoch, another order


def test_ranks_and_workers_cover_the_epoch_once(shards, folder):
    seen = []
    for rank in range(2):
        stream = ShardStream(shards / "train.json", seed=0, rank=rank, world_size=2)
        seen += _epoch(stream, 2, 2)
        assert len(stream) in (11, 12)
    assert sorted(seen) == sorted(folder[1].items())


def test_resume_refuses_a_count_inside_a_batch(shards):
    stream = ShardStream(shards / "train.json")
    with pytest.raises(BadInput, match="inside one"):
        stream.resume(4, batch_size=3, workers=0)


def test_the_split_is_webdatasets(shards, monkeypatch):
    """Each rank's worker reads the shards webdataset's split_by_node + split_by_worker give it."""
    from webdataset.shardlists import split_by_node, split_by_worker

    index = read_index(shards / "train.json")
    for rank, worker in [(0, 0), (0, 1), (1, 0), (1, 1), (2, 1)]:
        stream = ShardStream(index, seed=5, rank=rank, world_size=3)
        stream.set_epoch(4)
        order = stream.worker_shards()  # this rank's shards, in this epoch's order
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "3")
        monkeypatch.setenv("WORKER", str(worker))
        monkeypatch.setenv("NUM_WORKERS", "2")
        assert order == list(split_by_node(iter(_epoch_order(stream))))
        assert stream.worker_shards(worker, 2) == list(split_by_worker(iter(order)))


def _epoch_order(stream):
    """All shards in the epoch's order: the stream of a world of one with the same seed and epoch."""
    whole = ShardStream(stream.index, seed=stream.seed)
    whole.set_epoch(stream.epoch)
    return whole.worker_shards()


def test_a_corrupt_image_in_a_shard_is_named_and_skipped(tmp_path):
    from resnets.data.decode import DecodeRandomResizedCrop

    for name in ("a", "b"):
        (tmp_path / "train" / "cat").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16), (200, 0, 0)).save(tmp_path / "train" / "cat" / f"{name}.jpg")
    (tmp_path / "train" / "cat" / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    write_shards(tmp_path, tmp_path / "s", shard_size=5)
    with pytest.warns(UserWarning, match=r"train-000000.tar:\d+: .*"):
        got = list(ShardStream(tmp_path / "s" / "train.json", transform=DecodeRandomResizedCrop(8)))
    assert len(got) == 1 and got[0][0].shape == (3, 8, 8) and got[0][1] == 0
