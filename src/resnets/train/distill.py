"""Knowledge distillation: a frozen teacher's soft labels on the student's own augmented view.

"Function matching" (Beyer et al. 2022): the teacher sees the very images the student trains on, after
every augmentation (crop, policy, erasing, mixing), re-normalised to the teacher's own preprocessing and
resized to its input size, so any model file or catalogue name can teach. The loss is
``alpha * hard + (1 - alpha) * T**2 * KL(softmax(teacher / T) || softmax(student / T))`` (Hinton et al. 2015;
DeiT's soft distillation defaults: alpha 0.5, T 1). The teacher runs in eval mode without gradients, with
BatchNorm folded, channels-last, in bf16 where the device computes it natively.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..classes import folder_class_indices
from ..errors import BadInput
from ..inference.prepare import DTYPES, prepare
from ..pipeline import load_inference
from ..preprocess import Preprocessing


def pixels(x: torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    """The 0..255 RGB pixels a normalised batch came from: :meth:`Preprocessing.normalize` undone."""
    std = torch.tensor(preprocessing.std, dtype=x.dtype, device=x.device).view(3, 1, 1)
    mean = torch.tensor(preprocessing.mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
    scaled = x * std + mean
    if preprocessing.pixel_mean is not None:
        size = preprocessing.crop_size
        scaled = scaled + torch.tensor(preprocessing.pixel_mean, dtype=x.dtype, device=x.device).view(3, size, size)
    out = scaled / preprocessing.scale
    return out.flip(-3) if preprocessing.channel_order == "BGR" else out


@dataclass
class Teacher:
    """A frozen network, the preprocessing it was trained with and, when its classes are not the data's in order,
    which of its outputs are the data's classes."""

    network: nn.Module
    preprocessing: Preprocessing
    columns: list[int] | None
    dtype: torch.dtype

    @torch.no_grad()
    def logits(self, x: torch.Tensor, student: Preprocessing) -> torch.Tensor:
        """fp32 logits over the data's classes for the student's normalised input ``x``."""
        view = pixels(x.float(), student)
        size = self.preprocessing.crop_size
        if size is not None and tuple(view.shape[-2:]) != (size, size):
            view = F.interpolate(view, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        view = self.preprocessing.normalize(view).to(self.dtype).contiguous(memory_format=torch.channels_last)
        out = self.network(view).float()
        return out if self.columns is None else out[:, self.columns]


def load_teacher(weights: str | os.PathLike, classes: tuple[str, ...], device: torch.device,
                 precision: str = "fp32") -> Teacher:
    """The teacher of ``weights`` (a model file or catalogue name) for data of ``classes``, on ``device``."""
    inf = load_inference(None, weights, device=device)
    try:
        columns = folder_class_indices(classes, inf.classes)
    except ValueError as e:
        raise BadInput(f"teacher={weights}: its classes do not cover the data's: {e}") from None
    size = inf.preprocessing.crop_size or inf.network.input_size[-1]
    example = torch.zeros(1, 3, size, size, dtype=DTYPES[precision], device=device)
    network = prepare(inf.network, precision, example)
    return Teacher(network, inf.preprocessing, None if columns == list(range(len(classes))) else columns,
                   DTYPES[precision])


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``T**2 * KL(softmax(teacher / T) || softmax(student / T))``, averaged over the batch."""
    t = temperature
    return F.kl_div(F.log_softmax(student.float() / t, 1), F.log_softmax(teacher.float() / t, 1),
                    reduction="batchmean", log_target=True) * t * t


def distilled(hard: torch.Tensor, student: torch.Tensor, teacher: torch.Tensor, alpha: float,
              temperature: float) -> torch.Tensor:
    """``alpha * hard + (1 - alpha) * distillation_loss`` (``hard``: the loss on the labels)."""
    return alpha * hard + (1 - alpha) * distillation_loss(student, teacher, temperature)
