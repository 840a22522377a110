"""Per-image augmentation policies (AutoAugment, RandAugment, TrivialAugmentWide, AugMix) and random erasing.

torchvision's ``transforms.v2`` do the work, built as its classification reference builds them
(``presets.ClassificationPresetTrain``: bilinear interpolation, the policy after crop and flip on the uint8
image, random erasing after normalisation). Those transforms draw from torch's global generator; here each
image gets its own seed, drawn with the rest of the batch's augmentation from the trainer's checkpointed
generator, and the transform runs under that seed. So an image's augmentation depends on its seed alone:
the same in a cached and a streamed run, on any number of processes, and after a resume.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property

import torch
from torchvision.transforms import v2

from ..errors import BadInput, UnknownName
from ..choices import AUTO_AUGMENT

SEED_LIMIT = 2**62  # seeds are drawn in [0, SEED_LIMIT): int64 tensors, valid torch.manual_seed arguments


def auto_augment(policy: str, ra_magnitude: int = 9, augmix_severity: int = 3) -> v2.Transform:
    """The transform torchvision's reference builds for ``--auto-augment policy`` (one of :data:`AUTO_AUGMENT`)."""
    interpolation = v2.InterpolationMode.BILINEAR
    if policy == "ra":
        return v2.RandAugment(interpolation=interpolation, magnitude=ra_magnitude)
    if policy == "ta_wide":
        return v2.TrivialAugmentWide(interpolation=interpolation)
    if policy == "augmix":
        return v2.AugMix(interpolation=interpolation, severity=augmix_severity)
    if policy in AUTO_AUGMENT:
        return v2.AutoAugment(policy=v2.AutoAugmentPolicy(policy), interpolation=interpolation)
    raise UnknownName(f"auto_augment must be one of {', '.join(AUTO_AUGMENT)}, got {policy!r}")


def draw_seeds(n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` int64 seeds from ``generator``."""
    return torch.randint(0, SEED_LIMIT, (n,), generator=generator)


@contextlib.contextmanager
def kept_rng(device: torch.device) -> Iterator[None]:
    """Put torch's global generators (the CPU's, and ``device``'s GPU's) back as they were afterwards."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        yield


def reseed(seed: int, device: torch.device) -> None:
    """Seed the global generators a transform on ``device`` draws from: the CPU's (and the GPU's for a CUDA
    tensor), where ``torch.manual_seed`` seeds every device, far more slowly."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        torch.cuda.default_generators[index].manual_seed(seed)


def seeded(transform: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
           seeds: torch.Tensor) -> torch.Tensor:
    """``transform`` applied to each image of the batch under its own seed; torch's global RNG is left as it was."""
    if not len(images):
        return images
    out = []
    with kept_rng(images.device):
        for image, seed in zip(images, seeds.tolist()):
            reseed(seed, images.device)
            out.append(transform(image))
    return torch.stack(out)


@dataclass(frozen=True)
class SamplePolicy:
    """The per-image random transforms after crop and flip: an ``auto_augment`` policy on the uint8 pixels
    and random erasing with probability ``random_erase`` on the normalised input."""

    auto_augment: str | None = None
    ra_magnitude: int = 9
    augmix_severity: int = 3
    random_erase: float = 0.0

    def __post_init__(self) -> None:
        self.transform  # noqa: B018 (names a bad policy now, not at the first batch)
        if not 0.0 <= self.random_erase <= 1.0:
            raise BadInput(f"random_erase is a probability in [0, 1], got {self.random_erase}")

    @cached_property
    def transform(self) -> v2.Transform | None:
        """The auto-augment transform, or ``None``."""
        if self.auto_augment is None:
            return None
        return auto_augment(self.auto_augment, self.ra_magnitude, self.augmix_severity)

    @property
    def columns(self) -> int:
        """Seed columns this policy adds to each image's augmentation parameters (0 when off)."""
        return (self.auto_augment is not None) + (self.random_erase > 0)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Seeds for ``n`` images, shape (n, :attr:`columns`)."""
        return torch.stack([draw_seeds(n, generator) for _ in range(self.columns)], 1) if self.columns \
            else torch.zeros(n, 0, dtype=torch.long)

    def augment(self, images: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """The auto-augment policy on a uint8 batch (unchanged without one)."""
        return images if self.transform is None else seeded(self.transform, images, seeds[:, 0])

    def erase(self, x: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """Random erasing (torchvision's defaults: scale 0.02-0.33, ratio 0.3-3.3, value 0) on a normalised batch,
        in place."""
        if self.random_erase <= 0:
            return x
        seeds = seeds[:, -1]
        # RandomErasing's first draw under an image's seed decides whether it erases: only those images go
        # through the transform (the same seed again, so the same draws), not the nine in ten it leaves alone.
        erased = []
        with kept_rng(x.device):
            for i, seed in enumerate(seeds.tolist()):
                reseed(seed, x.device)
                if torch.rand(1).item() < self.random_erase:
                    erased.append(i)
        if erased:
            x[erased] = seeded(v2.RandomErasing(p=self.random_erase), x[erased], seeds[erased])
        return x
