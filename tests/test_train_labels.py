"""The evaluation split is labelled by the training split's class names, whichever classes its folders hold."""

from __future__ import annotations

import re

import pytest
import torch
from test_cifar_data import write_image_tree
from torchvision.datasets import ImageFolder

from resnets.data.tensors import load_image_tensors
from resnets.train import make_config
from resnets.train.distributed import DistContext
from resnets.train.data import RunData, load_run_data

ONE_PROCESS = DistContext(0, 1, torch.device("cpu"))


def run_data(root, mode: str) -> RunData:
    config = make_config("fast-cifar", model="resnet20", data=str(root), data_mode=mode, image_size=32,
                         cache_dir=str(root / "cache"))
    return load_run_data(config, ONE_PROCESS)


def test_eval_split_lacking_the_first_class_is_labelled_by_the_training_class_names(tmp_path):
    write_image_tree(tmp_path, "train", 2, classes=("ant", "bee", "cat"))
    written = write_image_tree(tmp_path, "test", 3, classes=("bee", "cat"), seed=1)
    reference = ImageFolder(str(tmp_path / "train")).class_to_idx  # torchvision: {"ant": 0, "bee": 1, "cat": 2}

    stream = run_data(tmp_path, "stream")
    assert stream.train.classes == stream.eval.classes == tuple(reference)
    assert len(stream.eval) == 6
    assert stream.eval.labels.tolist() == [reference[path.parent.name] for path in stream.eval.images]

    # a test-split cache written before the fix numbers bee 0 and cat 1; reading it must not bring that back
    cached = load_image_tensors(tmp_path, "test", image_size=32, cache_dir=tmp_path / "cache")
    assert cached.classes == ("bee", "cat")
    class_of = {hwc.transpose(2, 0, 1).tobytes(): cls for (cls, _), hwc in written.items()}
    for _ in range(2):  # decoded train split, cached test split; then both from the cache
        memory = run_data(tmp_path, "memory")
        assert memory.eval.classes == tuple(reference) and len(memory.eval) == 6
        names = [class_of[image.numpy().tobytes()] for image in memory.eval.images]
        assert memory.eval.labels.tolist() == [reference[name] for name in names]


@pytest.mark.parametrize("mode", ["memory", "stream"])
def test_eval_class_never_trained_on_is_an_error_naming_class_and_folder(tmp_path, mode):
    write_image_tree(tmp_path, "train", 1, classes=("ant", "bee"))
    write_image_tree(tmp_path, "test", 1, classes=("ant", "bee", "dog"))
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "test")) + r": class 'dog' is not among"):
        run_data(tmp_path, mode)
