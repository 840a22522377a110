"""Distillation: the loss by a hand computation, the teacher's view of the student's batch by its own preprocessing."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import resnets
from resnets.errors import BadInput
from resnets.preprocess import CIFAR10, IMAGENET_CAFFE, Preprocessing
from resnets.train.distill import distillation_loss, distilled, load_teacher, pixels


def test_distillation_loss_by_hand():
    student = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    teacher = torch.tensor([[2.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    for t in (1.0, 4.0):
        total = 0.0
        for s_row, t_row in zip(student.tolist(), teacher.tolist()):
            zs = sum(math.exp(v / t) for v in s_row)
            zt = sum(math.exp(v / t) for v in t_row)
            p = [math.exp(v / t) / zt for v in t_row]  # teacher's softened probabilities
            q = [math.exp(v / t) / zs for v in s_row]
            total += sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q))  # KL(teacher || student)
        expected = t * t * total / 2  # T^2, averaged over the batch
        assert distillation_loss(student, teacher, t).item() == pytest.approx(expected, rel=1e-6)
        hard = torch.tensor(0.7)
        assert distilled(hard, student, teacher, 0.25, t).item() == pytest.approx(0.25 * 0.7 + 0.75 * expected, rel=1e-6)
    assert distillation_loss(teacher, teacher, 2.0).item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("prep", [
    CIFAR10, IMAGENET_CAFFE,
    Preprocessing((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), resize_size=4, crop_size=4,
                  pixel_mean=tuple(torch.linspace(0.2, 0.6, 48).tolist())),  # the paper's per-pixel mean
])
def test_pixels_undo_any_normalisation(prep):
    u = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    torch.testing.assert_close(pixels(prep.normalize(u), prep), u.float(), rtol=0, atol=1e-3)


def test_the_teacher_sees_the_students_view_in_its_own_preprocessing_size_and_classes():
    """The embedded CIFAR-10 ResNet-20 teaching a 24-pixel student normalised its own way on three of CIFAR-10's
    classes in another order: its logits are those of the untouched network on the same pixels resized to 32 and
    normalised with its recorded preprocessing, columns picked by class name."""
    student = Preprocessing((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), resize_size=24, crop_size=24)
    classes = ("truck", "cat", "airplane")
    teacher = load_teacher("resnet20.cifar10", classes, torch.device("cpu"))
    u = torch.randint(0, 256, (4, 3, 24, 24), dtype=torch.uint8)
    got = teacher.logits(student.normalize(u), student)
    network = resnets.create_model("resnet20", weights="resnet20.cifar10").eval()
    view = F.interpolate(u.float(), size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
    with torch.no_grad():
        expected = network(CIFAR10.normalize(view))[:, [9, 3, 0]]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert not got.requires_grad
    with pytest.raises(BadInput, match="teacher=resnet20.cifar10: its classes do not cover the data's"):
        load_teacher("resnet20.cifar10", ("abyssinian", "beagle"), torch.device("cpu"))
