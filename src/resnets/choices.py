"""The names the command line offers as choices, kept free of torch so that ``resnets --help`` starts fast.

The modules that implement them (``inference/table.py``, ``inference/export.py``, ``device.py``, ``explain.py``,
``evaluate.py``, ``train/``) read their names from here or are checked against them (``tests/test_backend_table.py``),
so each list is still defined once.
"""

from __future__ import annotations

import re

#: Inference precisions (``resnets.optimize``, ``--precision``): the names of ``inference/table.py``'s entries.
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16", "int8")
#: Inference backends (``resnets.optimize(backend=...)``, ``--backend``): the names of ``inference/table.py``'s entries.
BACKENDS: tuple[str, ...] = ("torch", "onnxruntime", "openvino")
#: What ``--backend`` takes: ``auto`` (the fastest installed for this CPU and precision) or a backend.
BACKEND_CHOICES: tuple[str, ...] = ("auto", *BACKENDS)
#: Export file formats (``resnets export --format``).
FORMATS: tuple[str, ...] = ("onnx", "exported-program")
#: Class-activation-map methods (``resnets.explain``, ``resnets explain --method``).
METHODS: tuple[str, ...] = ("cam", "gradcam", "gradcam++")
#: Test-time augmentations of ``resnets eval --tta`` (``resnets.evaluate(tta=...)``); ``ten-crop`` is also
#: ``resnets eval --ten-crop``.
TTA: tuple[str, ...] = ("none", "flip", "ten-crop")
#: Images on the contact sheet of ``resnets eval --report``'s most confidently wrong, unless ``--wrong`` says.
REPORT_WRONG = 16
#: Training arithmetic (``resnets train --precision``, ``TrainConfig.precision``): ``train/precision.py``'s autocast
#: dtypes; ``auto`` is bf16 where the device computes it natively, else fp32 (``train/precision.resolve_precision``).
TRAIN_PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
#: Learning-rate schedules (``--schedule``, ``TrainConfig.schedule``): ``train/schedule.py``.
SCHEDULES: tuple[str, ...] = ("step", "onecycle", "cosine", "triangular")
#: What fine-tuning freezes (``--freeze``, ``TrainConfig.freeze``): nothing, all but the classifier, BN statistics.
FREEZE_MODES: tuple[str, ...] = ("none", "backbone", "bn")
#: How training normalises its input (``TrainConfig.normalize``): mean/std per channel, the paper's per-pixel mean,
#: or the starting weights' own.
NORMALIZE_MODES: tuple[str, ...] = ("channel", "pixel", "weights")
#: Where training data lives (``--data-mode``, ``TrainConfig.data_mode``): ``train/streaming.py``.
DATA_MODES: tuple[str, ...] = ("auto", "memory", "stream")
#: How training images are decoded (``--decode``, ``TrainConfig.decode``): ``train/augment.py``: ``resize`` to the
#: recipe's square (once into memory, or per step) and crop from it; ``crop`` (streaming) at the size each image's
#: random crop needs, the box drawn on the whole image.
DECODE_MODES: tuple[str, ...] = ("resize", "crop")
#: Device names every command understands: ``auto``, ``cpu``, ``cuda``, ``cuda:N``.
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
#: Per-image augmentation policies (``--auto-augment``, ``TrainConfig.auto_augment``): ``train/policies.py``;
#: ``imagenet``, ``cifar10`` and ``svhn`` are AutoAugment's learned policies.
AUTO_AUGMENT: tuple[str, ...] = ("ta_wide", "ra", "augmix", "imagenet", "cifar10", "svhn")
#: Optimizers (``--opt``, ``TrainConfig.opt``): ``train/optim.py``; lamb and lars need ``resnets[train]`` (timm).
OPTIMIZERS: tuple[str, ...] = ("sgd", "adamw", "lamb", "lars")
#: Training losses (``--loss``, ``TrainConfig.loss``): ``train/mixing.py``.
LOSSES: tuple[str, ...] = ("ce", "bce")
#: Learning-rate warm-up kinds (``--lr-warmup-method``, ``TrainConfig.lr_warmup_method``): ``train/schedule.py``.
LR_WARMUP_METHODS: tuple[str, ...] = ("constant", "linear")
