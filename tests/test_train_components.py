"""Training components against their references: torchvision's transforms used directly and its classification
reference's code (RASampler, set_weight_decay, the EMA and its decay), timm's losses and optimizers, FFCV's resolution
schedule."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
from timm.data.mixup import mixup_target
from timm.loss import BinaryCrossEntropy, SoftTargetCrossEntropy
from torch import nn
from torchvision.transforms import v2

import resnets
from resnets.errors import MissingExtra
from resnets.train.augment import RecipeTransforms
from resnets.train.ema import adjusted_decay, make_ema, update_ema
from resnets.train.mixing import TrainLoss, batch_mixing, mix
from resnets.train.optim import make_optimizer, param_groups
from resnets.train.policies import SamplePolicy
from resnets.train.progressive import resolution
from resnets.train.repeated import repeated_order, repeated_steps

BILINEAR = v2.InterpolationMode.BILINEAR


# --- references, restated from their sources (not importable from an installed package) ----------------------

def rasampler(n: int, num_replicas: int, rank: int, seed: int, repetitions: int) -> list[int]:
    """torchvision references/classification/sampler.py ``RASampler``'s indices for one replica, restated: the
    epoch's permutation (generator seeded ``seed + epoch``), each index ``repetitions`` times in a row, padded from
    its start to a multiple of the replicas, every ``num_replicas``-th from ``rank``, the first
    ``floor(n // 256 * 256 / num_replicas)`` kept."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    repeated = [i for i in perm for _ in range(repetitions)]
    total = math.ceil(n * repetitions / num_replicas) * num_replicas
    padded = (repeated * 2)[:total]
    return padded[rank:total:num_replicas][: int(math.floor(n // 256 * 256 / num_replicas))]


def torchvision_weight_decay_groups(model, weight_decay, norm_weight_decay=None, bias_weight_decay=None):
    """torchvision references/classification/utils.py ``set_weight_decay`` with train.py's ``bias`` custom key,
    restated: depth first over ``named_children``, each module's own trainable parameters: one named ``bias`` to the
    bias group when that decay is given, else a normalisation module's (its five classes) to the norm group when
    that one is, else to the others; non-empty groups in the order others, norm, bias."""
    norm_classes = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm,
                    nn.modules.instancenorm._InstanceNorm, nn.LocalResponseNorm)
    groups = {"other": [], "norm": [], "bias": []}

    def visit(module):
        for name, p in module.named_parameters(recurse=False):
            if p.requires_grad:
                key = ("bias" if bias_weight_decay is not None and name == "bias" else
                       "norm" if norm_weight_decay is not None and isinstance(module, norm_classes) else "other")
                groups[key].append(p)
        for _, child in module.named_children():
            visit(child)

    visit(model)
    decays = {"other": weight_decay, "norm": norm_weight_decay, "bias": bias_weight_decay}
    return [{"params": ps, "weight_decay": decays[k]} for k, ps in groups.items() if ps]


def torchvision_ema(model, decay):
    """torchvision references/classification/utils.py ``ExponentialMovingAverage``: an ``AveragedModel`` of the
    buffers too, averaging each tensor by ``decay * average + (1 - decay) * current``."""
    return torch.optim.swa_utils.AveragedModel(model, "cpu", lambda avg, p, n: decay * avg + (1 - decay) * p,
                                               use_buffers=True)


def ffcv_get_resolution(epoch, min_res, max_res, end_ramp, start_ramp):
    """FFCV's ImageNet example (train_imagenet.py) ``get_resolution``, restated: min_res up to start_ramp, max_res
    from end_ramp, between them the linear interpolation rounded (numpy, half to even) to a multiple of 32."""
    if epoch <= start_ramp:
        return min_res
    if epoch >= end_ramp:
        return max_res
    return int(np.round(np.interp([epoch], [start_ramp, end_ramp], [min_res, max_res])[0] / 32)) * 32


# --- mixing and the losses ------------------------------------------------------------------------------------

@pytest.mark.parametrize("alphas", [(0.8, 0.0), (0.0, 1.0), (0.2, 1.0)])
def test_mixing_is_torchvisions_random_choice_of_mixup_and_cutmix_under_the_steps_seed(alphas):
    images, labels = torch.randn(8, 3, 16, 16), torch.randint(0, 5, (8,))
    mixing = batch_mixing(*alphas, num_classes=5)
    kinds = (v2.MixUp, v2.CutMix)
    reference = v2.RandomChoice([kind(alpha=a, num_classes=5) for kind, a in zip(kinds, alphas) if a > 0])
    for seed in (1, 2, 3):
        before = torch.get_rng_state()
        x, y = mix(mixing, images, labels, seed)
        assert torch.equal(torch.get_rng_state(), before)
        torch.manual_seed(seed)
        rx, ry = reference(images, labels)
        torch.testing.assert_close(x, rx, rtol=0, atol=0)
        torch.testing.assert_close(y, ry, rtol=0, atol=0)
        assert y.shape == (8, 5) and not torch.equal(x, images)
    assert batch_mixing(0.0, 0.0, 5) is None


def test_soft_target_cross_entropy_and_binary_cross_entropy_are_timms():
    torch.manual_seed(0)
    x, t = torch.randn(16, 10), torch.randint(0, 10, (16,))
    lam = 0.7
    mixed = lam * nn.functional.one_hot(t, 10) + (1 - lam) * nn.functional.one_hot(t.flip(0), 10)
    for smoothing in (0.0, 0.1):
        reference = mixup_target(t, 10, lam, smoothing)  # timm's smoothed mixed targets
        torch.testing.assert_close(TrainLoss("ce", smoothing)(x, mixed), SoftTargetCrossEntropy()(x, reference))
        torch.testing.assert_close(TrainLoss("ce", smoothing)(x, t),
                                   SoftTargetCrossEntropy()(x, mixup_target(t, 10, 1.0, smoothing)))
        for thresh in (None, 0.2):
            timm_bce = BinaryCrossEntropy(smoothing=smoothing, target_threshold=thresh)
            ours = TrainLoss("bce", smoothing, thresh)
            torch.testing.assert_close(ours(x, t), timm_bce(x, t))  # class indices: timm smooths them
            torch.testing.assert_close(ours(x, mixed), timm_bce(x, reference))  # soft: smoothed upstream in timm
    with pytest.raises(ValueError, match="loss must be one of ce, bce"):
        TrainLoss("focal")
    with pytest.raises(ValueError, match="bce_target_thresh"):
        TrainLoss("ce", bce_target_thresh=0.2)


# --- per-image policies ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("policy, reference", [
    ("ta_wide", lambda: v2.TrivialAugmentWide(interpolation=BILINEAR)),
    ("ra", lambda: v2.RandAugment(interpolation=BILINEAR, magnitude=5)),
    ("augmix", lambda: v2.AugMix(interpolation=BILINEAR, severity=2)),
    ("imagenet", lambda: v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET, interpolation=BILINEAR)),
    ("cifar10", lambda: v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10, interpolation=BILINEAR)),
])
def test_each_image_gets_the_torchvision_policy_under_its_own_seed(policy, reference):
    """The transform torchvision's reference preset builds, run on each image under its seed; nothing else
    (not the batch, not torch's global RNG) changes what an image gets."""
    images = torch.randint(0, 256, (6, 3, 24, 24), dtype=torch.uint8)
    sample = SamplePolicy(policy, ra_magnitude=5, augmix_severity=2)
    seeds = torch.tensor([[11], [12], [13], [14], [15], [16]])
    before = torch.get_rng_state()
    out = sample.augment(images, seeds)
    assert torch.equal(torch.get_rng_state(), before)
    transform = reference()
    for image, seed, got in zip(images, seeds[:, 0].tolist(), out):
        torch.manual_seed(seed)
        assert torch.equal(got, transform(image))
    assert not torch.equal(out, images)
    torch.manual_seed(123)  # another global state, another batch around it: the same pixels
    assert torch.equal(sample.augment(images[2:4], seeds[2:4]), out[2:4])


def test_random_erasing_is_torchvisions_on_the_normalised_input_after_the_policy():
    transforms = RecipeTransforms(32, "pad-crop", policy=SamplePolicy("ta_wide", random_erase=0.5))
    params = transforms.sample(6, torch.Generator().manual_seed(0))
    assert params.shape == (6, 5)  # offsets, flip, the policy's seed, the erasing's seed
    x = torch.randn(6, 3, 32, 32)
    erased = transforms.erase(x.clone(), params)
    for image, seed, got in zip(x, params[:, 4].tolist(), erased):
        torch.manual_seed(seed)
        assert torch.equal(got, v2.RandomErasing(p=0.5)(image))
    assert (erased == 0).flatten(1).any(1).sum() > 0 and torch.equal(transforms.erase(x[:0], params[:0]), x[:0])
    # without policies the recipe draws exactly the parameters it drew before they existed
    plain, gen = RecipeTransforms(32, "pad-crop"), torch.Generator().manual_seed(0)
    offsets = torch.randint(0, 9, (6, 2), generator=gen)
    flips = (torch.rand(6, generator=gen) < 0.5).long()[:, None]
    assert torch.equal(plain.sample(6, torch.Generator().manual_seed(0)), torch.cat([offsets, flips], 1))
    with pytest.raises(ValueError, match="auto_augment must be one of ta_wide, ra, augmix"):
        SamplePolicy("trivial")
    with pytest.raises(ValueError, match="random_erase is a probability"):
        SamplePolicy(random_erase=1.5)


def test_training_and_evaluation_sides_split_as_torchvisions_crop_sizes():
    t = RecipeTransforms(224, "random-resized-crop", 256 / 224, train_size=176, eval_size=224, eval_resize_size=232)
    assert t.decode_sizes("train") == (256, 256) and t.decode_sizes("eval") == (232, 224)
    images = torch.randint(0, 256, (3, 3, 256, 256), dtype=torch.uint8)
    params = t.sample(3, torch.Generator().manual_seed(0))
    assert t.apply(images, params).shape == (3, 3, 176, 176)
    assert t.apply(images, params, size=128).shape == (3, 3, 128, 128)  # progressive resizing's side
    cifar = RecipeTransforms(32, "pad-crop", train_size=24)
    crop = cifar.apply(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8), torch.tensor([[4, 4, 0]] * 2))
    assert crop.shape == (2, 3, 24, 24) and cifar.decode_sizes("eval") == (32, 32)


# --- EMA ------------------------------------------------------------------------------------------------------

def test_ema_is_torchvisions_exponential_moving_average_with_its_decay_adjustment_and_schedule():
    """N SGD steps with BatchNorm (buffers averaged too), updates every model_ema_steps steps of an epoch,
    restarted during the warm-up epochs: the same average as the reference's class and loop, to 1e-6."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    batch_size, ema_steps, epochs, decay, warmup = 16, 2, 4, 0.999, 1
    # the reference's adjustment (train.py), world_size * per-GPU batch = our global batch
    adjust = 1 * batch_size * ema_steps / epochs
    alpha = min(1.0, (1.0 - decay) * adjust)
    assert adjusted_decay(decay, ema_steps, batch_size, epochs) == pytest.approx(1.0 - alpha, abs=0)
    ours = make_ema(model, adjusted_decay(decay, ema_steps, batch_size, epochs))
    reference = torchvision_ema(model, decay=1.0 - alpha)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for epoch in range(epochs):
        for i in range(5):
            x, y = torch.randn(batch_size, 3, 8, 8), torch.randint(0, 3, (batch_size,))
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            update_ema(ours, model, i, ema_steps, warming_up=epoch < warmup)
            if i % ema_steps == 0:  # the reference's train_one_epoch
                reference.update_parameters(model)
                if epoch < warmup:
                    reference.n_averaged.fill_(0)
    assert int(ours.n_averaged) == int(reference.n_averaged) == 9
    for (name, a), b in zip(ours.module.state_dict().items(), reference.module.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
    assert not torch.allclose(ours.module[0].weight, model[0].weight)


# --- optimizers -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("norm, bias", [(None, None), (0.0, None), (None, 0.0), (0.0, 1e-5)])
def test_parameter_groups_are_torchvisions_set_weight_decay(norm, bias):
    model = resnets.create_model("resnet20")
    model.fc.weight.requires_grad_(False)
    reference = torchvision_weight_decay_groups(model, 5e-4, norm, bias)
    ours = param_groups(model, 5e-4, norm, bias)
    assert [g["weight_decay"] for g in ours] == [g["weight_decay"] for g in reference]
    assert [[id(p) for p in g["params"]] for g in ours] == [[id(p) for p in g["params"]] for g in reference]


def test_evonorm_parameters_are_normalisation_parameters():
    model = resnets.create_model("resnetv2_18", norm="evonorm", num_classes=3)
    norm = {id(p) for m in model.modules() if type(m).__name__ == "EvoNormS0" for p in m.parameters()}
    groups = param_groups(model, 1e-4, norm_weight_decay=0.0)
    assert norm and {id(p) for p in groups[1]["params"]} == norm and groups[1]["weight_decay"] == 0.0


def test_optimizers_are_torch_and_timm_ones_and_lamb_lars_name_the_extra(monkeypatch):
    from timm.optim import Lamb, Lars

    model = nn.Linear(4, 2)
    groups = param_groups(model, 1e-4, bias_weight_decay=0.0)
    sgd = make_optimizer("sgd", groups, lr=0.1, momentum=0.8, nesterov=True, weight_decay=1e-4)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.8
    assert [g["weight_decay"] for g in sgd.param_groups] == [1e-4, 0.0]
    assert type(make_optimizer("adamw", groups, lr=1e-3)) is torch.optim.AdamW
    assert type(make_optimizer("lamb", groups, lr=5e-3, weight_decay=0.02)) is Lamb
    lars = make_optimizer("lars", groups, lr=0.1, momentum=0.9)
    assert type(lars) is Lars and lars.defaults["momentum"] == 0.9
    with pytest.raises(ValueError, match="opt must be one of sgd, adamw, lamb, lars"):
        make_optimizer("rmsprop", groups, lr=0.1)
    monkeypatch.setitem(sys.modules, "timm.optim", None)  # timm not installed
    with pytest.raises(MissingExtra, match=r'pip install "resnets\[train\]"'):
        make_optimizer("lamb", groups, lr=0.1)


# --- repeated augmentation, progressive resizing --------------------------------------------------------------

@pytest.mark.parametrize("n, reps, world, batch", [(600, 3, 1, 64), (1000, 4, 2, 64), (777, 3, 4, 32), (256, 2, 1, 256)])
def test_repeated_augmentation_gives_each_process_torchvisions_rasampler_indices(n, reps, world, batch):
    order = repeated_order(n, reps, epoch_seed=42, world_size=world, batch_size=batch)
    local = batch // world
    steps = repeated_steps(n, world, batch)
    assert len(order) == steps * batch
    for rank in range(world):
        expected = rasampler(n, num_replicas=world, rank=rank, seed=42, repetitions=reps)[: steps * local]
        mine = torch.cat([order[k * batch:(k + 1) * batch][rank * local:(rank + 1) * local] for k in range(steps)])
        assert mine.tolist() == expected
    with pytest.raises(ValueError, match="fewer than one batch"):
        repeated_order(200, 3, 0, 1, 64)


def test_progressive_resolution_is_ffcvs_schedule():
    for epoch in range(40):
        assert resolution(epoch, 160, 192, 10, 30) == ffcv_get_resolution(epoch, 160, 192, 30, 10)
        assert resolution(epoch, 96, 224, 5, 35) == ffcv_get_resolution(epoch, 96, 224, 35, 5)
    assert [resolution(e, 16, 32, 2, 6, res_step=8) for e in range(8)] == [16, 16, 16, 16, 24, 32, 32, 32]  # np.round: to even
    with pytest.raises(ValueError, match="min_res <= max_res"):
        resolution(0, 64, 32, 0, 1)
