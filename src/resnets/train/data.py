"""A run's data: the training and evaluation splits (decoded in memory, or image lists to stream), the recipe's
transforms, and the evaluation preprocessing that every weights file of the run records."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision.transforms.v2.functional import center_crop

from ..errors import BadInput
from ..data.shards import sidecar
from ..data.source import SPLIT_ALIASES, TAR_SUFFIXES, ArrayImage, ImageList, read_split
from ..data.tensors import ImageTensors, decode_split
from ..preprocess import Preprocessing
from ..weights.entry import WeightsEntry
from .augment import RecipeTransforms
from .config import TrainConfig, default_image_size
from .distributed import DistContext, barrier
from .policies import SamplePolicy
from .streaming import choose_data_mode


@dataclass
class RunData:
    train: ImageTensors | ImageList  # decoded in memory, or image lists when streaming
    eval: ImageTensors | ImageList
    eval_split: str
    transforms: RecipeTransforms
    preprocessing: Preprocessing  # the evaluation input recipe, recorded in every weights file

    @property
    def streaming(self) -> bool:
        return isinstance(self.train, ImageList)


@dataclass(frozen=True)
class Splits:
    """What a run trains and evaluates on, listed (nothing decoded): enough to know the classes."""

    train: ImageList
    eval: ImageList
    eval_name: str  # "test", or "val" (a val/ folder or tar, or images held out of the training split)


def list_splits(config: TrainConfig) -> Splits:
    """The training and evaluation images of ``config``: its splits, held-out images and random subsets; the
    evaluation split labelled by the training split's class names (its folders may lack, or add, a class)."""
    train_list = read_split(config.data, "train")
    if config.val_split:
        eval_list, train_list = train_list.held_out(config.val_split, config.seed)
        split = "val"
    else:
        eval_list = read_split(config.data, "test")
        split = _split_name(eval_list.origin)
        try:
            eval_list = eval_list.relabel(train_list.classes)
        except ValueError as e:
            raise BadInput(f"{eval_list.origin}: {e}") from e
    if config.train_subset:
        train_list = _random_subset(train_list, config.train_subset, config.seed + 1)
    if config.test_subset:
        eval_list = _random_subset(eval_list, config.test_subset, config.seed + 2)
    return Splits(train_list, eval_list, split)


def load_run_data(config: TrainConfig, ctx: DistContext, splits: Splits | None = None,
                  weights: WeightsEntry | None = None) -> RunData:
    """Train and evaluation data (decoded tensors, or image lists when streaming) and the recipe's transforms.

    ``splits``: the listed images (default: :func:`list_splits`); ``weights``: what the starting weights say of
    themselves (their input normalisation, for ``normalize="weights"``). Rank 0 decodes first, the others then
    read its cache.
    """
    splits = splits or list_splits(config)
    train_list, eval_list, split = splits.train, splits.eval, splits.eval_name
    size = config.image_size or default_image_size(config.model)
    policy = SamplePolicy(config.auto_augment, config.ra_magnitude, config.augmix_severity,
                          config.random_erase) if config.augment else SamplePolicy()
    transforms = RecipeTransforms(size, config.augmentation if config.augment else "none", config.eval_resize,
                                  train_size=config.train_crop_size, eval_size=config.val_crop_size,
                                  eval_resize_size=config.val_resize_size, policy=policy)
    streaming = config.decode == "crop" or \
        choose_data_mode(config.data_mode, len(train_list), transforms.decode_sizes("train")[1]) == "stream"
    if config.decode == "crop":
        _check_crop_decoding(train_list, transforms)
    if streaming and config.normalize == "pixel":
        raise BadInput("normalize='pixel' needs the per-pixel mean of the decoded training set; "
                         "use data_mode='memory' or channel normalisation when streaming")
    if streaming:
        train_set: ImageTensors | ImageList = train_list
        eval_set: ImageTensors | ImageList = eval_list
    else:
        if not ctx.is_main:
            barrier(ctx)
        train_set = _decode(train_list, transforms, "train", config)
        eval_set = _decode(eval_list, transforms, "eval", config)
        if ctx.is_main:
            barrier(ctx)
    preprocessing = Preprocessing(tuple(config.mean), tuple(config.std), resize_size=transforms.resize,
                                  crop_size=transforms.crop)
    if config.normalize == "weights" and weights is not None:  # the input the pretrained weights were trained on
        own = weights.preprocessing
        preprocessing = dataclasses.replace(preprocessing, mean=own.mean, std=own.std, scale=own.scale,
                                            channel_order=own.channel_order)
    if config.normalize == "pixel":  # the paper: subtract the per-pixel mean of the training images
        mean = center_crop(train_set.images, [size, size]).double().mean(0).div(255).float()
        preprocessing = Preprocessing((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), resize_size=transforms.resize,
                                      crop_size=size, pixel_mean=tuple(mean.flatten().tolist()))
    return RunData(train_set, eval_set, split, transforms, preprocessing)


def _check_crop_decoding(images: ImageList, transforms: RecipeTransforms) -> None:
    """``decode="crop"`` needs a random crop to decode for, and image files (not decoded arrays) to decode."""
    if transforms.augmentation not in ("random-resized-crop", "scale-crop"):
        raise BadInput("decode='crop' is for random crops (augmentation='random-resized-crop' or 'scale-crop'); "
                       f"this run's is {transforms.augmentation!r}: use decode='resize'")
    arrays = next((ref for ref in images.images if isinstance(ref, ArrayImage)), None)
    if arrays is not None:
        raise BadInput(f"decode='crop' decodes image files, and {images.origin} holds decoded arrays ({arrays}): "
                       "use decode='resize'")


def _split_name(origin: Path) -> str:
    """What the evaluation split is called where it was found: ``"val"`` for a ``val/`` folder, ``val.tar`` or a
    shard folder's ``val`` shards (ImageNet's layout), else ``"test"`` (a test folder or tar, CIFAR's test batch)."""
    if origin.is_dir() and sidecar(origin, "test") is None and sidecar(origin, "val") is not None:
        return "val"
    name = origin.name
    for suffix in TAR_SUFFIXES:
        name = name.removesuffix(suffix)
    return name if name in SPLIT_ALIASES["test"] else "test"


def _decode(images: ImageList, transforms: RecipeTransforms, split: str, config: TrainConfig) -> ImageTensors:
    resize, crop = transforms.decode_sizes(split)
    return decode_split(images, transforms.decoder(split), f"resize {resize} crop {crop}", cache_dir=config.cache_dir)


def _random_subset(data: ImageList, n: int, seed: int) -> ImageList:
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    return data.subset(perm[: min(n, len(data))].sort().values)
