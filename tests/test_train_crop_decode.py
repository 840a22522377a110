"""Training with ``decode="crop"``: each training image decoded at the size its random crop needs, in the
DataLoader workers, under a seed its place in the epoch decides. The crops equal torchvision's reference chain
(RandomResizedCrop on the whole image, flip, TrivialAugmentWide) under the same seed; a killed run resumes
exactly; the number of workers changes nothing."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from resnets.data.images import load_img
from resnets.data.source import read_split
from resnets.errors import BadInput
from resnets.train import make_config, train
from resnets.train.augment import RecipeTransforms
from resnets.train.policies import SamplePolicy
from resnets.train.streaming import CropFiles
from test_imagenet_recipes import SMALL, killed_and_resumed, same_run, tiny_imagenet  # noqa: F401 (the fixture)

CROP = {**SMALL, "data_mode": "stream", "decode": "crop"}


def test_a_crop_is_torchvisions_reference_chain_on_the_whole_image_under_its_seed(tiny_imagenet):  # noqa: F811
    files = read_split(str(tiny_imagenet), "train").images[:12]
    transforms = RecipeTransforms(16, "random-resized-crop", policy=SamplePolicy("ta_wide"))
    reference = v2.Compose([v2.RandomResizedCrop(12, antialias=True), v2.RandomHorizontalFlip(),
                            v2.TrivialAugmentWide(interpolation=v2.InterpolationMode.BILINEAR)])
    dataset = CropFiles(files, transforms)
    for index in range(len(files)):
        seed = 1000 + index
        before = torch.get_rng_state()
        ours = dataset[(index, seed, 12)]
        assert torch.equal(torch.get_rng_state(), before)  # the caller's generator is put back
        assert ours.error is None and ours.index == index
        torch.manual_seed(seed)
        theirs = reference(torch.from_numpy(np.array(load_img(files[index]))).permute(2, 0, 1))
        assert torch.equal(ours.image, theirs), index


def test_a_bad_file_is_named_and_skipped(tiny_imagenet, tmp_path):  # noqa: F811
    files = read_split(str(tiny_imagenet), "train").images[:2]
    bad = tmp_path / "bad.JPEG"
    bad.write_bytes(files[0].read_bytes()[:200])
    sample = CropFiles([bad, tmp_path / "gone.JPEG"], RecipeTransforms(16, "random-resized-crop"))
    for index, name in ((0, "bad.JPEG"), (1, "gone.JPEG")):
        got = sample[(index, 0, 12)]
        assert got.image is None and name in got.error


@pytest.mark.slow
def test_killed_after_an_epoch_resumes_exactly_and_workers_change_nothing(tiny_imagenet, tmp_path,  # noqa: F811
                                                                          monkeypatch):
    config = make_config("tv-v2", data=str(tiny_imagenet), epochs=2, out=str(tmp_path / "straight"),
                         **{**CROP, "cache_dir": str(tmp_path / "cache")})
    straight = train(config)
    assert [r["step"] for r in straight["history"]] == [2, 4]
    two_workers = train(dataclasses.replace(config, out=str(tmp_path / "workers"), workers=2))
    resized = train(dataclasses.replace(config, out=str(tmp_path / "resize"), decode="resize"))
    assert resized["history"][0]["train_loss"] != straight["history"][0]["train_loss"]  # the crops are not the square's
    same_run(straight, two_workers)
    same_run(straight, killed_and_resumed(config, tmp_path / "resumed", monkeypatch))


@pytest.mark.parametrize("recipe", ["paper-imagenet", "ffcv-rn50"])
def test_scale_augmentation_and_progressive_resizing_crop_as_they_decode(recipe, tiny_imagenet, tmp_path):  # noqa: F811
    """The paper's scale augmentation and FFCV's epoch sides through crop decoding: two epochs of two steps."""
    extra = dict(min_res=32, max_res=32, image_size=32, train_crop_size=32, val_crop_size=32, val_resize_size=36) \
        if recipe == "ffcv-rn50" else {}
    result = train(make_config(recipe, data=str(tiny_imagenet), epochs=2, out=str(tmp_path / "run"),
                               **{**CROP, **extra, "cache_dir": str(tmp_path / "cache")}))
    assert [r["step"] for r in result["history"]] == [2, 4] and result["skipped_images"] == 0


def test_crop_decoding_is_refused_where_it_cannot_work(tiny_imagenet, tmp_path):  # noqa: F811
    with pytest.raises(BadInput, match="data_mode='stream'"):
        train(make_config("tv-v2", data=str(tiny_imagenet), out=str(tmp_path / "a"), **{**CROP,
                                                                                         "data_mode": "memory"}))
    with pytest.raises(BadInput, match="random crops"):
        train(make_config("fast-cifar", data=str(tiny_imagenet), out=str(tmp_path / "b"), **CROP))
