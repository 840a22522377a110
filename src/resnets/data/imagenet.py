"""ILSVRC-2012 as users download it: wnid class folders in the catalogue's order, and the flat ``val/`` folder's labels.

The 1,000 ImageNet-1k classes are numbered in the catalogue's order (``resnets/assets/imagenet_classes.tsv``, the
order of every published checkpoint), not by which wnids a folder happens to hold, so a model trained on any part
of ImageNet loads and scores like a published one.

A flat ``val/`` (``ILSVRC2012_val_00000001.JPEG`` ...) is labelled by one of:

* Kaggle's ``LOC_val_solution.csv`` (``ImageId,PredictionString``; the wnid is the prediction string's first word);
* the devkit's ``ILSVRC2012_validation_ground_truth.txt`` (one ILSVRC2012_ID per line, line i for image i). Those
  IDs (1..1000) number the synsets in the devkit's ``meta.mat`` order, which is *not* the sorted-wnid order (ID 1
  is n02119789, kit fox), so the devkit's ``data/meta.mat`` is needed beside it and is read as torchvision's
  ``ImageNet`` reads it (the synsets with no children; ``scipy.io.loadmat``). Kaggle's ``LOC_synset_mapping.txt``
  lists the wnids in sorted order and so cannot stand in for it.

Each file is looked for in the ``val`` folder, the folders above it (up to :data:`SEARCH_UP`), and their
``ILSVRC2012_devkit_t12/data/``.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from pathlib import Path

from ..classes import imagenet_classes
from ..errors import BadInput, MissingExtra

WNID = re.compile(r"n\d{8}")
VAL_NUMBER = re.compile(r"ILSVRC2012_val_(\d{8})")
KAGGLE_SOLUTION = "LOC_val_solution.csv"
DEVKIT_TRUTH = "ILSVRC2012_validation_ground_truth.txt"
DEVKIT_META = "meta.mat"
DEVKIT_DATA = Path("ILSVRC2012_devkit_t12", "data")
#: How many folders above ``val/`` are searched (Kaggle's csv sits three above ``ILSVRC/Data/CLS-LOC/val``).
SEARCH_UP = 4
DATA_HINT = f"{DEVKIT_TRUTH} with data/meta.mat in the val folder or a folder above it"


def catalogue_wnids() -> tuple[str, ...]:
    """The 1,000 wnids in the catalogue's (every published checkpoint's) order."""
    return tuple(wnid for wnid, _ in imagenet_classes())


def is_wnid_set(classes: Sequence[str]) -> bool:
    """Whether class folders are ImageNet wnids, so they are numbered in the catalogue's order."""
    return bool(classes) and all(WNID.fullmatch(c) for c in classes)


def catalogue_labels(wnids: Sequence[str], where: object) -> list[int]:
    """Each wnid's index in the catalogue; wnids it lacks are named (``where``: the folder or file they came from)."""
    index = {w: i for i, w in enumerate(catalogue_wnids())}
    unknown = sorted(set(wnids) - index.keys())
    if unknown:
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        raise BadInput(f"{where}: {', '.join(unknown[:10])}{more} not among the 1,000 ImageNet-1k classes of "
                       "resnets/assets/imagenet_classes.tsv")
    return [index[w] for w in wnids]


def _candidates(folder: Path, name: str) -> list[Path]:
    folders = [folder, *list(folder.resolve().parents)[:SEARCH_UP]]
    return [p for f in folders for p in (f / name, f / DEVKIT_DATA / name) if p.is_file()]


def flat_val_wnids(folder: Path, images: Sequence[Path]) -> list[str]:
    """The wnid of each image of a flat ILSVRC-2012 ``val`` folder, from the ground truth found near it."""
    numbers = []
    for path in images:
        match = VAL_NUMBER.search(path.name)
        if not match:
            raise BadInput(f"{path}: a flat val folder holds ILSVRC2012_val_NNNNNNNN images; this name is not one "
                           "(put images in <class>/ folders instead)")
        numbers.append(int(match.group(1)))
    kaggle = _candidates(folder, KAGGLE_SOLUTION)
    if kaggle:
        truth = _kaggle_solution(kaggle[0])
        return [_look_up(truth, f"ILSVRC2012_val_{n:08d}", kaggle[0]) for n in numbers]
    devkit = _candidates(folder, DEVKIT_TRUTH)
    if not devkit:
        raise BadInput(f"{folder}: images with no class folders and no ground truth: put Kaggle's {KAGGLE_SOLUTION} "
                       f"or the devkit's {DATA_HINT}")
    meta = _candidates(folder, DEVKIT_META)
    if not meta:
        raise BadInput(f"{devkit[0]}: its ILSVRC2012_IDs are numbered in the devkit's meta.mat order, not the sorted "
                       f"wnids: put the devkit's data/meta.mat beside it (or use Kaggle's {KAGGLE_SOLUTION})")
    ids = _devkit_ids(meta[0])
    lines = devkit[0].read_text().split()
    wnids = []
    for n, path in zip(numbers, images):
        if not 1 <= n <= len(lines):
            raise BadInput(f"{path}: image number {n} has no line in {devkit[0]} ({len(lines)} lines)")
        wnids.append(_look_up(ids, int(lines[n - 1]), meta[0]))
    return wnids


def _look_up(table: dict, key: object, source: Path) -> str:
    if key not in table:
        raise BadInput(f"{source}: no entry for {key}")
    return table[key]


def _kaggle_solution(path: Path) -> dict[str, str]:
    """ImageId -> wnid from Kaggle's ``LOC_val_solution.csv``."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or rows[0][:2] != ["ImageId", "PredictionString"]:
        raise BadInput(f"{path}: expected the header 'ImageId,PredictionString' of Kaggle's {KAGGLE_SOLUTION}")
    truth = {}
    for line, row in enumerate(rows[1:], 2):
        words = row[1].split() if len(row) > 1 else []
        if not words or not WNID.fullmatch(words[0]):
            raise BadInput(f"{path}, line {line}: the prediction string does not start with a wnid: {row!r}")
        truth[row[0]] = words[0]
    return truth


def _devkit_ids(path: Path) -> dict[int, str]:
    """ILSVRC2012_ID -> wnid of the devkit's ``meta.mat``: its leaf synsets (``num_children == 0``)."""
    try:
        from scipy.io import loadmat
    except ImportError as e:
        raise MissingExtra(f"reading {path} needs scipy: pip install scipy") from e
    try:
        synsets = loadmat(path, squeeze_me=True)["synsets"]
        return {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets if int(s["num_children"]) == 0}
    except (KeyError, ValueError, TypeError, IndexError, OSError) as e:
        raise BadInput(f"{path}: not the ILSVRC-2012 devkit's meta.mat (a 'synsets' struct array): {e}") from e
