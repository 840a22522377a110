"""The catalogue of published pretrained weights: where each file lives, what it was trained for, how good it is.

Every entry says everything needed to use its file faithfully: the URL and its published hash,
the architecture variant (``model_kwargs``), the input preprocessing, the class list, and the
published metrics with their source.  Names are ``<model>.<tag>``, e.g. ``resnet50.tv_in1k_v2``.

Each published file is one literal :class:`WeightsEntry` below (as torchvision's weights enums and timm's
``default_cfgs`` are), so grepping a name finds its definition; ``tests/test_weights_registry.py`` and
``tests/test_weights_catalogue.py`` compare them with the publishers' own tables.
"""

from __future__ import annotations

import dataclasses

from ..errors import BadInput, UnknownName
from ..preprocess import CIFAR10, IMAGENET_CAFFE, IMAGENET_TF, IMAGENET_TORCH
from .entry import WeightsEntry

# torchvision (torchvision/models/resnet.py): URL, sha256 prefix (in the file name), acc@1/acc@5 and file size.
# Its newer-recipe weights (the V2s, ResNeXt101_64X4D's V1) are evaluated after resizing to 232 (older: 256),
# then a 224 crop; every one with bilinear interpolation.
_TV_LICENSE = "BSD-3-Clause (torchvision)"
_TV_RESIZE_232 = dataclasses.replace(IMAGENET_TORCH, resize_size=232)

# Keras applications: file md5s from keras/src/applications/resnet.py (WEIGHTS_HASHES: with top, without top);
# accuracies and sizes from the table at https://keras.io/api/applications/.
_KERAS_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
_KERAS_V1_LICENSE = "MIT (Kaiming He's deep-residual-networks release)"
# The V2 files were trained for keras-applications, which is MIT-licensed and states no other licence for them.
_KERAS_V2_LICENSE = "MIT (keras-applications)"

# akamaster/pytorch_resnet_cifar10: file names (sha256 prefix inside) and published CIFAR-10 test accuracy.
_CIFAR_BASE = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/"
_CIFAR_LICENSE = "BSD-2-Clause"

_ENTRIES = (
    # torchvision: torchvision.models.ResNet*_Weights, ResNeXt*_Weights, Wide_ResNet*_Weights.
    WeightsEntry(
        name="resnet18.tv_in1k", model="resnet18", url="https://download.pytorch.org/models/resnet18-f37072fd.pth",
        sha256="f37072fd", file_format="torch", preprocessing=IMAGENET_TORCH,
        metrics={"top1": 69.758, "top5": 89.078},
        source=("torchvision.models.ResNet18_Weights.IMAGENET1K_V1 (ImageNet-1k val; recipe "
                "https://github.com/pytorch/vision/tree/main/references/classification#resnet)"),
        license=_TV_LICENSE, file_size_mb=44.661,
    ),
    WeightsEntry(
        name="resnet34.tv_in1k", model="resnet34", url="https://download.pytorch.org/models/resnet34-b627a593.pth",
        sha256="b627a593", file_format="torch", preprocessing=IMAGENET_TORCH, metrics={"top1": 73.314, "top5": 91.42},
        source=("torchvision.models.ResNet34_Weights.IMAGENET1K_V1 (ImageNet-1k val; recipe "
                "https://github.com/pytorch/vision/tree/main/references/classification#resnet)"),
        license=_TV_LICENSE, file_size_mb=83.275,
    ),
    WeightsEntry(
        name="resnet50.tv_in1k", model="resnet50", url="https://download.pytorch.org/models/resnet50-0676ba61.pth",
        sha256="0676ba61", file_format="torch", preprocessing=IMAGENET_TORCH, metrics={"top1": 76.13, "top5": 92.862},
        source=("torchvision.models.ResNet50_Weights.IMAGENET1K_V1 (ImageNet-1k val; recipe "
                "https://github.com/pytorch/vision/tree/main/references/classification#resnet)"),
        license=_TV_LICENSE, file_size_mb=97.781,
    ),
    WeightsEntry(
        name="resnet50.tv_in1k_v2", model="resnet50", url="https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
        sha256="11ad3fa6", file_format="torch", preprocessing=_TV_RESIZE_232,
        metrics={"top1": 80.858, "top5": 95.434},
        source=("torchvision.models.ResNet50_Weights.IMAGENET1K_V2 (ImageNet-1k val; recipe "
                "https://github.com/pytorch/vision/issues/3995#new-recipe)"),
        license=_TV_LICENSE, file_size_mb=97.79,
    ),
    WeightsEntry(
        name="resnet101.tv_in1k", model="resnet101", url="https://download.pytorch.org/models/resnet101-63fe2227.pth",
        sha256="63fe2227", file_format="torch", preprocessing=IMAGENET_TORCH,
        metrics={"top1": 77.374, "top5": 93.546},
        source=("torchvision.models.ResNet101_Weights.IMAGENET1K_V1 (ImageNet-1k val; recipe "
                "https://github.com/pytorch/vision/tree/main/references/classification#resnet)"),
        license=_TV_LICENSE, file_size_mb=170.511,
    ),
    WeightsEntry(
        name="resnet101.tv_in1k_v2", model="resnet101",
        url="https://download.pytorch.org/models/resnet101-cd907fc2.pth", sha256="cd907fc2", file_format="torch",
        preprocessing=_TV_RESIZE_232, metrics={"top1": 81.886, "top5": 95.78},
        source=("torchvision.models.ResNet101_Weights.IMAGENET1K_V2 (ImageNet-1k val; recipe "
                "https://github.com/pytorch/vision/issues/3995#new-recipe)"),
        license=_TV_LICENSE, file_size_mb=170.53,
    ),
    WeightsEntry(
        name="resnet152.tv_in1k", model="resnet152", url="https://download.pytorch.org/models/resnet152-394f9c45.pth",
        sha256="394f9c45", file_format="torch", preprocessing=IMAGENET_TORCH,
        metrics={"top1": 78.312, "top5": 94.046},
        source=("torchvision.models.ResNet152_Weights.IMAGENET1K_V1 (ImageNet-1k val; recipe "
                "https://github.com/pytorch/vision/tree/main/references/classification#resnet)"),
        license=_TV_LICENSE, file_size_mb=230.434,
    ),
    WeightsEntry(
        name="resnet152.tv_in1k_v2", model="resnet152",
        url="https://download.pytorch.org/models/resnet152-f82ba261.pth", sha256="f82ba261", file_format="torch",
        preprocessing=_TV_RESIZE_232, metrics={"top1": 82.284, "top5": 96.002},
        source=("torchvision.models.ResNet152_Weights.IMAGENET1K_V2 (ImageNet-1k val; recipe "
                "https://github.com/pytorch/vision/issues/3995#new-recipe)"),
        license=_TV_LICENSE, file_size_mb=230.474,
    ),
    WeightsEntry(
        name="resnext50_32x4d.tv_in1k", model="resnext50_32x4d",
        url="https://download.pytorch.org/models/resnext50_32x4d-7cdf4587.pth", sha256="7cdf4587",
        file_format="torch", preprocessing=IMAGENET_TORCH, metrics={"top1": 77.618, "top5": 93.698},
        source=("torchvision.models.ResNeXt50_32X4D_Weights.IMAGENET1K_V1 (ImageNet-1k val; recipe "
                "https://github.com/pytorch/vision/tree/main/references/classification#resnext)"),
        license=_TV_LICENSE, file_size_mb=95.789,
    ),
    WeightsEntry(
        name="resnext50_32x4d.tv_in1k_v2", model="resnext50_32x4d",
        url="https://download.pytorch.org/models/resnext50_32x4d-1a0047aa.pth", sha256="1a0047aa",
        file_format="torch", preprocessing=_TV_RESIZE_232, metrics={"top1": 81.198, "top5": 95.34},
        source=("torchvision.models.ResNeXt50_32X4D_Weights.IMAGENET1K_V2 (ImageNet-1k val; recipe "
                "https://github.com/pytorch/vision/issues/3995#new-recipe)"),
        license=_TV_LICENSE, file_size_mb=95.833,
    ),
    WeightsEntry(
        name="resnext101_32x8d.tv_in1k", model="resnext101_32x8d",
        url="https://download.pytorch.org/models/resnext101_32x8d-8ba56ff5.pth", sha256="8ba56ff5",
        file_format="torch", preprocessing=IMAGENET_TORCH, metrics={"top1": 79.312, "top5": 94.526},
        source=("torchvision.models.ResNeXt101_32X8D_Weights.IMAGENET1K_V1 (ImageNet-1k val; recipe "
                "https://github.com/pytorch/vision/tree/main/references/classification#resnext)"),
        license=_TV_LICENSE, file_size_mb=339.586,
    ),
    WeightsEntry(
        name="resnext101_32x8d.tv_in1k_v2", model="resnext101_32x8d",
        url="https://download.pytorch.org/models/resnext101_32x8d-110c445d.pth", sha256="110c445d",
        file_format="torch", preprocessing=_TV_RESIZE_232, metrics={"top1": 82.834, "top5": 96.228},
        source=("torchvision.models.ResNeXt101_32X8D_Weights.IMAGENET1K_V2 (ImageNet-1k val; recipe "
                "https://github.com/pytorch/vision/issues/3995#new-recipe-with-fixres)"),
        license=_TV_LICENSE, file_size_mb=339.673,
    ),
    WeightsEntry(
        name="resnext101_64x4d.tv_in1k", model="resnext101_64x4d",
        url="https://download.pytorch.org/models/resnext101_64x4d-173b62eb.pth", sha256="173b62eb",
        file_format="torch", preprocessing=_TV_RESIZE_232, metrics={"top1": 83.246, "top5": 96.454},
        source=("torchvision.models.ResNeXt101_64X4D_Weights.IMAGENET1K_V1 (ImageNet-1k val; recipe "
                "https://github.com/pytorch/vision/pull/5935)"),
        license=_TV_LICENSE, file_size_mb=319.318,
    ),
    WeightsEntry(
        name="wide_resnet50_2.tv_in1k", model="wide_resnet50_2",
        url="https://download.pytorch.org/models/wide_resnet50_2-95faca4d.pth", sha256="95faca4d",
        file_format="torch", preprocessing=IMAGENET_TORCH, metrics={"top1": 78.468, "top5": 94.086},
        source=("torchvision.models.Wide_ResNet50_2_Weights.IMAGENET1K_V1 (ImageNet-1k val; recipe "
                "https://github.com/pytorch/vision/pull/912#issue-445437439)"),
        license=_TV_LICENSE, file_size_mb=131.82,
    ),
    WeightsEntry(
        name="wide_resnet50_2.tv_in1k_v2", model="wide_resnet50_2",
        url="https://download.pytorch.org/models/wide_resnet50_2-9ba9bcbe.pth", sha256="9ba9bcbe",
        file_format="torch", preprocessing=_TV_RESIZE_232, metrics={"top1": 81.602, "top5": 95.758},
        source=("torchvision.models.Wide_ResNet50_2_Weights.IMAGENET1K_V2 (ImageNet-1k val; recipe "
                "https://github.com/pytorch/vision/issues/3995#new-recipe-with-fixres)"),
        license=_TV_LICENSE, file_size_mb=263.124,
    ),
    WeightsEntry(
        name="wide_resnet101_2.tv_in1k", model="wide_resnet101_2",
        url="https://download.pytorch.org/models/wide_resnet101_2-32ee1156.pth", sha256="32ee1156",
        file_format="torch", preprocessing=IMAGENET_TORCH, metrics={"top1": 78.848, "top5": 94.284},
        source=("torchvision.models.Wide_ResNet101_2_Weights.IMAGENET1K_V1 (ImageNet-1k val; recipe "
                "https://github.com/pytorch/vision/pull/912#issue-445437439)"),
        license=_TV_LICENSE, file_size_mb=242.896,
    ),
    WeightsEntry(
        name="wide_resnet101_2.tv_in1k_v2", model="wide_resnet101_2",
        url="https://download.pytorch.org/models/wide_resnet101_2-d733dc28.pth", sha256="d733dc28",
        file_format="torch", preprocessing=_TV_RESIZE_232, metrics={"top1": 82.51, "top5": 96.02},
        source=("torchvision.models.Wide_ResNet101_2_Weights.IMAGENET1K_V2 (ImageNet-1k val; recipe "
                "https://github.com/pytorch/vision/issues/3995#new-recipe)"),
        license=_TV_LICENSE, file_size_mb=484.747,
    ),
    # Keras applications V1 (keras.applications.ResNet50/101/152): Caffe preprocessing, stride in the 1x1.
    WeightsEntry(
        name="resnet50.keras_in1k", model="resnet50",
        url=_KERAS_BASE + "resnet50_weights_tf_dim_ordering_tf_kernels.h5", sha256=None, file_format="keras_h5",
        model_kwargs={"stride_in_1x1": True, "bn_eps": 1.001e-5, "conv_bias": False, "num_classes": 1000},
        preprocessing=IMAGENET_CAFFE, metrics={"top1": 74.9, "top5": 92.1},
        source="keras.applications.ResNet (Caffe weights of He et al.); metrics: https://keras.io/api/applications/",
        license=_KERAS_V1_LICENSE, md5="2cb95161c43110f7111970584f804107",
        file_size_mb=98,
    ),
    WeightsEntry(
        name="resnet50.keras_in1k_notop", model="resnet50",
        url=_KERAS_BASE + "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", sha256=None, file_format="keras_h5",
        model_kwargs={"stride_in_1x1": True, "bn_eps": 1.001e-5, "conv_bias": False, "num_classes": 0},
        preprocessing=IMAGENET_CAFFE,
        source="keras.applications.ResNet (Caffe weights of He et al.); metrics: https://keras.io/api/applications/",
        license=_KERAS_V1_LICENSE, md5="4d473c1dd8becc155b73f8504c6f6626",
    ),
    WeightsEntry(
        name="resnet101.keras_in1k", model="resnet101",
        url=_KERAS_BASE + "resnet101_weights_tf_dim_ordering_tf_kernels.h5", sha256=None, file_format="keras_h5",
        model_kwargs={"stride_in_1x1": True, "bn_eps": 1.001e-5, "conv_bias": False, "num_classes": 1000},
        preprocessing=IMAGENET_CAFFE, metrics={"top1": 76.4, "top5": 92.8},
        source="keras.applications.ResNet (Caffe weights of He et al.); metrics: https://keras.io/api/applications/",
        license=_KERAS_V1_LICENSE, md5="f1aeb4b969a6efcfb50fad2f0c20cfc5",
        file_size_mb=171,
    ),
    WeightsEntry(
        name="resnet101.keras_in1k_notop", model="resnet101",
        url=_KERAS_BASE + "resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5", sha256=None,
        file_format="keras_h5",
        model_kwargs={"stride_in_1x1": True, "bn_eps": 1.001e-5, "conv_bias": False, "num_classes": 0},
        preprocessing=IMAGENET_CAFFE,
        source="keras.applications.ResNet (Caffe weights of He et al.); metrics: https://keras.io/api/applications/",
        license=_KERAS_V1_LICENSE, md5="88cf7a10940856eca736dc7b7e228a21",
    ),
    WeightsEntry(
        name="resnet152.keras_in1k", model="resnet152",
        url=_KERAS_BASE + "resnet152_weights_tf_dim_ordering_tf_kernels.h5", sha256=None, file_format="keras_h5",
        model_kwargs={"stride_in_1x1": True, "bn_eps": 1.001e-5, "conv_bias": False, "num_classes": 1000},
        preprocessing=IMAGENET_CAFFE, metrics={"top1": 76.6, "top5": 93.1},
        source="keras.applications.ResNet (Caffe weights of He et al.); metrics: https://keras.io/api/applications/",
        license=_KERAS_V1_LICENSE, md5="100835be76be38e30d865e96f2aaae62",
        file_size_mb=232,
    ),
    WeightsEntry(
        name="resnet152.keras_in1k_notop", model="resnet152",
        url=_KERAS_BASE + "resnet152_weights_tf_dim_ordering_tf_kernels_notop.h5", sha256=None,
        file_format="keras_h5",
        model_kwargs={"stride_in_1x1": True, "bn_eps": 1.001e-5, "conv_bias": False, "num_classes": 0},
        preprocessing=IMAGENET_CAFFE,
        source="keras.applications.ResNet (Caffe weights of He et al.); metrics: https://keras.io/api/applications/",
        license=_KERAS_V1_LICENSE, md5="ee4c566cf9a93f14d82f913c2dc6dd0c",
    ),
    # Keras applications V2 (keras.applications.ResNet50V2/101V2/152V2): Keras' "tf" preprocessing (RGB to [-1, 1]);
    # the registry's resnet*v2 have Keras' layout already (conv biases, eps 1.001e-5, stride in a stage's last block).
    WeightsEntry(
        name="resnet50v2.keras_in1k", model="resnet50v2",
        url=_KERAS_BASE + "resnet50v2_weights_tf_dim_ordering_tf_kernels.h5", sha256=None, file_format="keras_h5",
        model_kwargs={"num_classes": 1000}, preprocessing=IMAGENET_TF, metrics={"top1": 76.0, "top5": 93.0},
        source=("keras.applications.ResNet50V2 (trained for keras-applications); metrics: "
                "https://keras.io/api/applications/"),
        license=_KERAS_V2_LICENSE, md5="3ef43a0b657b3be2300d5770ece849e0", file_size_mb=98,
    ),
    WeightsEntry(
        name="resnet50v2.keras_in1k_notop", model="resnet50v2",
        url=_KERAS_BASE + "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5", sha256=None,
        file_format="keras_h5", model_kwargs={"num_classes": 0}, preprocessing=IMAGENET_TF,
        source=("keras.applications.ResNet50V2 (trained for keras-applications); metrics: "
                "https://keras.io/api/applications/"),
        license=_KERAS_V2_LICENSE, md5="fac2f116257151a9d068a22e544a4917",
    ),
    WeightsEntry(
        name="resnet101v2.keras_in1k", model="resnet101v2",
        url=_KERAS_BASE + "resnet101v2_weights_tf_dim_ordering_tf_kernels.h5", sha256=None, file_format="keras_h5",
        model_kwargs={"num_classes": 1000}, preprocessing=IMAGENET_TF, metrics={"top1": 77.2, "top5": 93.8},
        source=("keras.applications.ResNet101V2 (trained for keras-applications); metrics: "
                "https://keras.io/api/applications/"),
        license=_KERAS_V2_LICENSE, md5="6343647c601c52e1368623803854d971", file_size_mb=171,
    ),
    WeightsEntry(
        name="resnet101v2.keras_in1k_notop", model="resnet101v2",
        url=_KERAS_BASE + "resnet101v2_weights_tf_dim_ordering_tf_kernels_notop.h5", sha256=None,
        file_format="keras_h5", model_kwargs={"num_classes": 0}, preprocessing=IMAGENET_TF,
        source=("keras.applications.ResNet101V2 (trained for keras-applications); metrics: "
                "https://keras.io/api/applications/"),
        license=_KERAS_V2_LICENSE, md5="c0ed64b8031c3730f411d2eb4eea35b5",
    ),
    WeightsEntry(
        name="resnet152v2.keras_in1k", model="resnet152v2",
        url=_KERAS_BASE + "resnet152v2_weights_tf_dim_ordering_tf_kernels.h5", sha256=None, file_format="keras_h5",
        model_kwargs={"num_classes": 1000}, preprocessing=IMAGENET_TF, metrics={"top1": 78.0, "top5": 94.2},
        source=("keras.applications.ResNet152V2 (trained for keras-applications); metrics: "
                "https://keras.io/api/applications/"),
        license=_KERAS_V2_LICENSE, md5="a49b44d1979771252814e80f8ec446f9", file_size_mb=232,
    ),
    WeightsEntry(
        name="resnet152v2.keras_in1k_notop", model="resnet152v2",
        url=_KERAS_BASE + "resnet152v2_weights_tf_dim_ordering_tf_kernels_notop.h5", sha256=None,
        file_format="keras_h5", model_kwargs={"num_classes": 0}, preprocessing=IMAGENET_TF,
        source=("keras.applications.ResNet152V2 (trained for keras-applications); metrics: "
                "https://keras.io/api/applications/"),
        license=_KERAS_V2_LICENSE, md5="ed17cf2e0169df9d443503ef94b23b33",
    ),
    # akamaster/pytorch_resnet_cifar10: the paper's CIFAR-10 networks (option-A shortcuts).
    WeightsEntry(
        name="resnet20.akamaster_cifar10", model="resnet20", url=_CIFAR_BASE + "resnet20-12fca82f.th",
        sha256="12fca82f", file_format="torch", model_kwargs={"shortcut": "A", "num_classes": 10},
        preprocessing=CIFAR10, classes="cifar10", metrics={"top1": 91.73},
        source="https://github.com/akamaster/pytorch_resnet_cifar10 (README; CIFAR-10 test set, original pixels)",
        license=_CIFAR_LICENSE,
    ),
    WeightsEntry(
        name="resnet32.akamaster_cifar10", model="resnet32", url=_CIFAR_BASE + "resnet32-d509ac18.th",
        sha256="d509ac18", file_format="torch", model_kwargs={"shortcut": "A", "num_classes": 10},
        preprocessing=CIFAR10, classes="cifar10", metrics={"top1": 92.63},
        source="https://github.com/akamaster/pytorch_resnet_cifar10 (README; CIFAR-10 test set, original pixels)",
        license=_CIFAR_LICENSE,
    ),
    WeightsEntry(
        name="resnet44.akamaster_cifar10", model="resnet44", url=_CIFAR_BASE + "resnet44-014dd654.th",
        sha256="014dd654", file_format="torch", model_kwargs={"shortcut": "A", "num_classes": 10},
        preprocessing=CIFAR10, classes="cifar10", metrics={"top1": 93.1},
        source="https://github.com/akamaster/pytorch_resnet_cifar10 (README; CIFAR-10 test set, original pixels)",
        license=_CIFAR_LICENSE,
    ),
    WeightsEntry(
        name="resnet56.akamaster_cifar10", model="resnet56", url=_CIFAR_BASE + "resnet56-4bfd9763.th",
        sha256="4bfd9763", file_format="torch", model_kwargs={"shortcut": "A", "num_classes": 10},
        preprocessing=CIFAR10, classes="cifar10", metrics={"top1": 93.39},
        source="https://github.com/akamaster/pytorch_resnet_cifar10 (README; CIFAR-10 test set, original pixels)",
        license=_CIFAR_LICENSE,
    ),
    WeightsEntry(
        name="resnet110.akamaster_cifar10", model="resnet110", url=_CIFAR_BASE + "resnet110-1d1ed7c2.th",
        sha256="1d1ed7c2", file_format="torch", model_kwargs={"shortcut": "A", "num_classes": 10},
        preprocessing=CIFAR10, classes="cifar10", metrics={"top1": 93.68},
        source="https://github.com/akamaster/pytorch_resnet_cifar10 (README; CIFAR-10 test set, original pixels)",
        license=_CIFAR_LICENSE,
    ),
    WeightsEntry(
        name="resnet1202.akamaster_cifar10", model="resnet1202", url=_CIFAR_BASE + "resnet1202-f3b1deed.th",
        sha256="f3b1deed", file_format="torch", model_kwargs={"shortcut": "A", "num_classes": 10},
        preprocessing=CIFAR10, classes="cifar10", metrics={"top1": 93.82},
        source="https://github.com/akamaster/pytorch_resnet_cifar10 (README; CIFAR-10 test set, original pixels)",
        license=_CIFAR_LICENSE,
    ),
    # This project's own: shipped inside the package.
    WeightsEntry(
        name="resnet20.cifar10", model="resnet20", url=None,
        sha256="172664ce4797eaec06f667183546bcd79a5d86a9111bee66fd4ce51acdc1e2ba", file_format="safetensors",
        model_kwargs={"shortcut": "A", "num_classes": 10}, preprocessing=CIFAR10, classes="cifar10",
        metrics={"top1": 88.97, "top5": 99.31},
        source=("trained by the resnets project on the CIFAR-10 JPEGs in 113 min on a 2-core CPU: 'resnets train "
                "--model resnet20 --data cifar10-jpeg --recipe fast-cifar --epochs 120 --lr 0.1' (the final epoch's "
                "weights); top-1/top-5 on the 10,000 CIFAR-10 test JPEGs by 'resnets eval'"),
        license="BSD-3-Clause", asset="resnet20_cifar10.safetensors",
    ),
)


def _index(entries: tuple[WeightsEntry, ...]) -> dict[str, WeightsEntry]:
    """Entries by name; a name written twice is an error."""
    index: dict[str, WeightsEntry] = {}
    for e in entries:
        if e.name in index:
            raise BadInput(f"weights {e.name!r} are catalogued twice")
        index[e.name] = e
    return index


WEIGHTS: dict[str, WeightsEntry] = _index(_ENTRIES)

# What ``weights="imagenet"`` / ``"cifar10"`` means for each model: torchvision V2 where it exists, else V1.
_DEFAULT_TAGS = {"imagenet": ("tv_in1k_v2", "tv_in1k"), "cifar10": ("akamaster_cifar10",)}


#: The ``resnets train --recipe`` that made the weights of a tag (the part of a name after the model): torchvision's
#: V1 and V2 files (timm's copies of them: tv_in1k, tv2_in1k), timm's "ResNet strikes back" procedures, the Caffe
#: weights of He et al. that Keras' V1 files are.
RECIPE_OF_TAG = {"tv_in1k": "tv-v1", "tv_in1k_v2": "tv-v2", "tv2_in1k": "tv-v2", "a1_in1k": "rsb-a1",
                 "a2_in1k": "rsb-a2", "a3_in1k": "rsb-a3", "keras_in1k": "paper-imagenet",
                 "keras_in1k_notop": "paper-imagenet"}


def training_recipe(entry: WeightsEntry) -> str | None:
    """The recipe that made ``entry``'s weights (:data:`RECIPE_OF_TAG`), or None where resnets has none: Keras' V2
    files were trained for keras-applications by a recipe it does not publish."""
    if entry.file_format == "keras_h5" and entry.model.endswith("v2"):
        return None
    return RECIPE_OF_TAG.get(entry.name.partition(".")[2])


def list_weights(model: str | None = None) -> list[WeightsEntry]:
    """All entries, or those for one model name."""
    return [e for e in WEIGHTS.values() if model is None or e.model == model]


def get_weights(name: str, model: str | None = None) -> WeightsEntry:
    """The entry called ``name``; ``"imagenet"``/``"cifar10"`` pick ``model``'s default entry."""
    if name in _DEFAULT_TAGS:
        if model is None:
            raise BadInput(f"weights={name!r} needs a model name to choose from")
        for tag in _DEFAULT_TAGS[name]:
            if f"{model}.{tag}" in WEIGHTS:
                return WEIGHTS[f"{model}.{tag}"]
        have = ", ".join(e.name for e in list_weights(model)) or "none"
        raise UnknownName(f"{model} has no {name} weights; weights available for {model}: {have}")
    try:
        entry = WEIGHTS[name]
    except KeyError:
        close = [n for n in WEIGHTS if n.split(".")[0] == name.split(".")[0]] or sorted(WEIGHTS)
        raise UnknownName(f"unknown weights {name!r}; available: {', '.join(close)}") from None
    if model is not None and entry.model != model:
        raise BadInput(f"weights {name!r} are for {entry.model}, not {model}")
    return entry


