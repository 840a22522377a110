"""The catalogue of published pretrained weights: where each file lives, what it was trained for, how good it is.

Every entry says everything needed to use its file faithfully: the URL and its published hash,
the architecture variant (``model_kwargs``), the input preprocessing, the class list, and the
published metrics with their source.  Names are ``<model>.<tag>``, e.g. ``resnet50.tv_in1k_v2``.
"""

from __future__ import annotations

import dataclasses
import re

from ..preprocess import CIFAR10, IMAGENET_CAFFE, IMAGENET_TORCH
from .entry import WeightsEntry

# torchvision ImageNet-1k weights: URL, acc@1, acc@5 and file size (MB) as in torchvision/models/resnet.py.
_TV_RECIPE_V1 = "https://github.com/pytorch/vision/tree/main/references/classification#resnet"
_TV_RECIPE_V2 = "https://github.com/pytorch/vision/issues/3995#new-recipe"
_TV = {
    ("resnet18", 1): ("https://download.pytorch.org/models/resnet18-f37072fd.pth", 69.758, 89.078, 44.661),
    ("resnet34", 1): ("https://download.pytorch.org/models/resnet34-b627a593.pth", 73.314, 91.420, 83.275),
    ("resnet50", 1): ("https://download.pytorch.org/models/resnet50-0676ba61.pth", 76.130, 92.862, 97.781),
    ("resnet50", 2): ("https://download.pytorch.org/models/resnet50-11ad3fa6.pth", 80.858, 95.434, 97.79),
    ("resnet101", 1): ("https://download.pytorch.org/models/resnet101-63fe2227.pth", 77.374, 93.546, 170.511),
    ("resnet101", 2): ("https://download.pytorch.org/models/resnet101-cd907fc2.pth", 81.886, 95.780, 170.53),
    ("resnet152", 1): ("https://download.pytorch.org/models/resnet152-394f9c45.pth", 78.312, 94.046, 230.434),
    ("resnet152", 2): ("https://download.pytorch.org/models/resnet152-f82ba261.pth", 82.284, 96.002, 230.474),
}

# Keras applications: file md5s (with top, without top) from keras/src/applications/resnet.py;
# accuracies and sizes from the table at https://keras.io/api/applications/.
_KERAS_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
_KERAS = {
    "resnet50": (("2cb95161c43110f7111970584f804107", "4d473c1dd8becc155b73f8504c6f6626"), 74.9, 92.1, 98),
    "resnet101": (("f1aeb4b969a6efcfb50fad2f0c20cfc5", "88cf7a10940856eca736dc7b7e228a21"), 76.4, 92.8, 171),
    "resnet152": (("100835be76be38e30d865e96f2aaae62", "ee4c566cf9a93f14d82f913c2dc6dd0c"), 76.6, 93.1, 232),
}
_KERAS_VARIANT = {"stride_in_1x1": True, "bn_eps": 1.001e-5, "conv_bias": False}

# akamaster/pytorch_resnet_cifar10: file names (sha256 prefix inside) and published CIFAR-10 test accuracy.
_CIFAR_BASE = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/"
_CIFAR = {
    "resnet20": ("resnet20-12fca82f.th", 91.73),
    "resnet32": ("resnet32-d509ac18.th", 92.63),
    "resnet44": ("resnet44-014dd654.th", 93.10),
    "resnet56": ("resnet56-4bfd9763.th", 93.39),
    "resnet110": ("resnet110-1d1ed7c2.th", 93.68),
    "resnet1202": ("resnet1202-f3b1deed.th", 93.82),
}

_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,})\.")


def hash_prefix_from_url(url: str) -> str:
    """The sha256 prefix torch.hub-style file names carry (``resnet18-f37072fd.pth`` -> ``f37072fd``)."""
    match = _HASH_IN_NAME.search(url.rsplit("/", 1)[-1])
    if not match:
        raise ValueError(f"no sha256 prefix in the file name of {url}")
    return match.group(1)


def _build_entries() -> dict[str, WeightsEntry]:
    entries: list[WeightsEntry] = []
    for (model, version), (url, top1, top5, size) in _TV.items():
        entries.append(WeightsEntry(
            name=f"{model}.tv_in1k" + ("_v2" if version == 2 else ""),
            model=model, url=url, sha256=hash_prefix_from_url(url), file_format="torch",
            # torchvision evaluates its V2 weights after resizing to 232 (V1: 256), then a 224 crop.
            preprocessing=IMAGENET_TORCH if version == 1 else dataclasses.replace(IMAGENET_TORCH, resize_size=232),
            metrics={"top1": top1, "top5": top5},
            source=f"torchvision.models.{model.replace('resnet', 'ResNet')}_Weights.IMAGENET1K_V{version} "
                   f"(ImageNet-1k val; recipe {_TV_RECIPE_V1 if version == 1 else _TV_RECIPE_V2})",
            license="BSD-3-Clause (torchvision)", file_size_mb=size,
        ))
    for model, ((md5_top, md5_notop), top1, top5, size) in _KERAS.items():
        for top in (True, False):
            filename = f"{model}_weights_tf_dim_ordering_tf_kernels{'' if top else '_notop'}.h5"
            entries.append(WeightsEntry(
                name=f"{model}.keras_in1k" + ("" if top else "_notop"),
                model=model, url=_KERAS_BASE + filename, sha256=None, md5=md5_top if top else md5_notop,
                file_format="keras_h5",
                model_kwargs={**_KERAS_VARIANT, "num_classes": 1000 if top else 0},
                preprocessing=IMAGENET_CAFFE, metrics={"top1": top1, "top5": top5} if top else {},
                source="keras.applications.ResNet (Caffe weights of He et al.); "
                       "metrics: https://keras.io/api/applications/",
                license="MIT (Kaiming He's deep-residual-networks release)", file_size_mb=size if top else None,
            ))
    for model, (filename, top1) in _CIFAR.items():
        url = _CIFAR_BASE + filename
        entries.append(WeightsEntry(
            name=f"{model}.akamaster_cifar10", model=model, url=url, sha256=hash_prefix_from_url(url),
            file_format="torch", model_kwargs={"shortcut": "A", "num_classes": 10},
            preprocessing=CIFAR10, classes="cifar10", metrics={"top1": top1},
            source="https://github.com/akamaster/pytorch_resnet_cifar10 (README; CIFAR-10 test set, original pixels)",
            license="BSD-2-Clause",
        ))
    entries.append(WeightsEntry(
        name="resnet20.cifar10", model="resnet20", url=None,
        sha256="172664ce4797eaec06f667183546bcd79a5d86a9111bee66fd4ce51acdc1e2ba", file_format="safetensors",
        model_kwargs={"shortcut": "A", "num_classes": 10}, preprocessing=CIFAR10, classes="cifar10",
        metrics={"top1": 88.97, "top5": 99.31},
        source=("trained by the resnets project on the CIFAR-10 JPEGs in 113 min on a 2-core CPU: "
                "'resnets train --model resnet20 --data cifar10-jpeg --recipe fast-cifar --epochs 120 --lr 0.1' "
                "(the final epoch's weights); top-1/top-5 on the 10,000 CIFAR-10 test JPEGs by 'resnets eval'"),
        license="BSD-3-Clause",
        asset="resnet20_cifar10.safetensors",
    ))
    return {e.name: e for e in entries}


WEIGHTS: dict[str, WeightsEntry] = _build_entries()

# What ``weights="imagenet"`` / ``"cifar10"`` means for each model: torchvision V2 where it exists, else V1.
_DEFAULT_TAGS = {"imagenet": ("tv_in1k_v2", "tv_in1k"), "cifar10": ("akamaster_cifar10",)}


def list_weights(model: str | None = None) -> list[WeightsEntry]:
    """All entries, or those for one model name."""
    return [e for e in WEIGHTS.values() if model is None or e.model == model]


def get_weights(name: str, model: str | None = None) -> WeightsEntry:
    """The entry called ``name``; ``"imagenet"``/``"cifar10"`` pick ``model``'s default entry."""
    if name in _DEFAULT_TAGS:
        if model is None:
            raise ValueError(f"weights={name!r} needs a model name to choose from")
        for tag in _DEFAULT_TAGS[name]:
            if f"{model}.{tag}" in WEIGHTS:
                return WEIGHTS[f"{model}.{tag}"]
        have = ", ".join(e.name for e in list_weights(model)) or "none"
        raise ValueError(f"{model} has no {name} weights; weights available for {model}: {have}")
    try:
        entry = WEIGHTS[name]
    except KeyError:
        close = [n for n in WEIGHTS if n.split(".")[0] == name.split(".")[0]] or sorted(WEIGHTS)
        raise ValueError(f"unknown weights {name!r}; available: {', '.join(close)}") from None
    if model is not None and entry.model != model:
        raise ValueError(f"weights {name!r} are for {entry.model}, not {model}")
    return entry


