"""ILSVRC-2012 as downloaded: wnid folders in the catalogue's order, the flat val folder with the devkit's or Kaggle's
ground truth, hidden files, corrupt images and a wnid the catalogue lacks (resnets.data.source / data.imagenet)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from resnets.classes import imagenet_classes
from resnets.data.images import ImageFiles, collate_images
from resnets.data.source import read_split
from resnets.errors import BadInput

WNIDS = [w for w, _ in imagenet_classes()]
# Three classes whose sorted order (and devkit ID order) differ from their catalogue positions' ranks among them.
PICKED = [WNIDS[999], WNIDS[0], WNIDS[500]]


def _jpeg(path, colour=(200, 30, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), colour).save(path, "JPEG")


def _flat_val(root, n=6):
    """``root/val/ILSVRC2012_val_0000000i.JPEG``, image i of class PICKED[i % 3]; returns the expected wnids."""
    truth = [PICKED[i % 3] for i in range(n)]
    for i in range(n):
        _jpeg(root / "val" / f"ILSVRC2012_val_{i + 1:08d}.JPEG")
    (root / "val" / "._ILSVRC2012_val_00000001.JPEG").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    return truth


def _devkit(root, truth):
    """A devkit ``data/`` folder: meta.mat with 1,000 leaf synsets in a shuffled (non-sorted) ID order plus a parent
    synset, and the ground truth as those IDs."""
    from scipy.io import savemat

    order = np.random.default_rng(0).permutation(1000)
    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height",
              "num_train_images"]
    synsets = np.zeros((1001, 1), dtype=[(f, "O") for f in fields])
    for row, k in enumerate(order):
        synsets[row, 0] = (row + 1, WNIDS[k], "w", "g", 0, np.zeros(0), 0, 1300)
    synsets[1000, 0] = (1001, "n00001740", "entity", "g", 2, np.array([1, 2]), 19, 0)
    data = root / "ILSVRC2012_devkit_t12" / "data"
    data.mkdir(parents=True)
    savemat(data / "meta.mat", {"synsets": synsets})
    ids = {WNIDS[k]: row + 1 for row, k in enumerate(order)}
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{ids[w]}\n" for w in truth))
    return data.parent


def test_class_folders_are_numbered_in_the_catalogue_order(tmp_path):
    for wnid in PICKED:
        _jpeg(tmp_path / "train" / wnid / "a.JPEG")
    (tmp_path / "train" / PICKED[0] / ".hidden.JPEG").write_bytes(b"not listed")
    split = read_split(tmp_path, "train")
    assert split.classes == tuple(WNIDS)
    assert sorted(zip(map(str, split.images), split.labels.tolist())) == sorted(
        (str(tmp_path / "train" / w / "a.JPEG"), WNIDS.index(w)) for w in PICKED)


def test_flat_val_with_the_devkit_ground_truth_matches_torchvision(tmp_path, monkeypatch):
    import tarfile

    from torchvision.datasets import imagenet as tv_imagenet

    truth = _flat_val(tmp_path)
    devkit = _devkit(tmp_path, truth)
    with tarfile.open(tmp_path / "ILSVRC2012_devkit_t12.tar.gz", "w:gz") as tar:
        tar.add(devkit, devkit.name)
    monkeypatch.setattr(tv_imagenet, "_verify_archive", lambda *a: None)  # ours is not the real archive's md5
    tv_imagenet.parse_devkit_archive(str(tmp_path))  # torchvision's own reading of meta.mat and the ground truth
    _, val_wnids = tv_imagenet.load_meta_file(str(tmp_path))
    expected = [WNIDS.index(w) for w in val_wnids]
    val = read_split(tmp_path, "val")
    got = {p.name: label for p, label in zip(val.images, val.labels.tolist())}
    assert got == {f"ILSVRC2012_val_{i + 1:08d}.JPEG": label for i, label in enumerate(expected)}
    assert expected == [WNIDS.index(w) for w in truth]
    assert val.classes == tuple(WNIDS)


def test_devkit_ground_truth_without_meta_mat_says_what_is_missing(tmp_path):
    truth = _flat_val(tmp_path)
    devkit = _devkit(tmp_path, truth)
    (devkit / "data" / "meta.mat").unlink()
    with pytest.raises(BadInput, match="meta.mat"):
        read_split(tmp_path, "val")


def test_flat_val_with_kaggle_solution(tmp_path):
    truth = _flat_val(tmp_path)
    rows = "".join(f"ILSVRC2012_val_{i + 1:08d},{w} 1 2 30 20 {WNIDS[3]} 0 0 5 5\n" for i, w in enumerate(truth))
    (tmp_path / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + rows)
    val = read_split(tmp_path / "val", "val", flat=True)  # the val folder itself, as `resnets eval val/` gives it
    got = {p.name: label for p, label in zip(val.images, val.labels.tolist())}
    assert got == {f"ILSVRC2012_val_{i + 1:08d}.JPEG": WNIDS.index(w) for i, w in enumerate(truth)}


def test_flat_val_without_ground_truth_is_named(tmp_path):
    _flat_val(tmp_path)
    with pytest.raises(BadInput, match="LOC_val_solution.csv.*ILSVRC2012_validation_ground_truth.txt"):
        read_split(tmp_path, "val")


def test_a_wnid_missing_from_the_class_list_is_named(tmp_path):
    _jpeg(tmp_path / "train" / PICKED[0] / "a.JPEG")
    _jpeg(tmp_path / "train" / "n99999999" / "a.JPEG")
    with pytest.raises(BadInput, match="n99999999 not among the 1,000"):
        read_split(tmp_path, "train")


def test_a_corrupt_image_is_named_and_skipped(tmp_path):
    _jpeg(tmp_path / "train" / PICKED[0] / "good.JPEG")
    bad = tmp_path / "train" / PICKED[1] / "bad.JPEG"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    split = read_split(tmp_path, "train")
    batch = collate_images([ImageFiles(split.images)[i] for i in range(len(split))])
    assert len(batch.indices) == 1 and str(split.images[batch.indices[0]]).endswith("good.JPEG")
    assert len(batch.errors) == 1 and str(bad) in batch.errors[0][1]
    good = int(batch.indices[0])
    assert split.labels[good] == WNIDS.index(PICKED[0]) and split.labels[1 - good] == WNIDS.index(PICKED[1])
