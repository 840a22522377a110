"""This process's batches of a run, in either storage mode: the epoch's augmented training steps and the
evaluation split.

Each step takes the global batch from the epoch's permutation, seeded by (seed, epoch), and the
augmentation parameters drawn for the whole global batch from the run's checkpointed generator, and
slices both to this rank's share (and, streaming, to its readable files). So a cached and a streamed
run, a resumed run, and a run on another number of processes see the same pixels.

A training batch comes out ready for the network: cropped and flipped at the epoch's side (progressive
resizing), through the per-image policies, normalised with the recorded preprocessing, randomly erased and
mixed (MixUp/CutMix within this rank's share, under a per-step seed from the same generator). With repeated
augmentation the epoch's order is torchvision's RASampler's (:mod:`.repeated`) instead of a plain permutation.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import torch
from tqdm import tqdm

from ..data.images import ImageBatch, ImageFiles
from ..data.source import ImageList
from .config import TrainConfig
from .data import RunData
from .distributed import DistContext, all_sum, local_slice
from .mixing import batch_mixing, mix
from .policies import draw_seeds
from .progressive import resolution
from .repeated import repeated_order, repeated_steps
from .streaming import CropFiles, EpochBatches, EvalBatches, epoch_order, make_loader

CROP_SEEDS = 2**40  # crop decoding's per-image seeds come from (seed, epoch) too, this far from the order's seeds


class RunBatches:
    """The batches of ``data`` for this rank of ``ctx``; bad streamed files are skipped and reported once each."""

    def __init__(self, data: RunData, config: TrainConfig, ctx: DistContext) -> None:
        self.data, self.config, self.ctx = data, config, ctx
        self.skipped: set[str] = set()  # bad image files met by this process (streaming)
        if data.streaming:
            pin = ctx.device.type == "cuda"
            local = local_slice(config.batch_size, ctx)
            self.train_order = EpochBatches(len(data.train), config.batch_size, local)
            train_set = CropFiles(data.train.images, data.transforms) if config.decode == "crop" \
                else ImageFiles(data.train.images, data.transforms.decoder("train"))
            self.train_loader = make_loader(train_set, self.train_order, config.workers, pin)
            eval_order = EvalBatches(len(data.eval), config.eval_batch_size, ctx.rank, ctx.world_size)
            eval_set = ImageFiles(data.eval.images, data.transforms.decoder("eval"))
            self.eval_loader = make_loader(eval_set, eval_order, config.workers, pin)
        else:
            self.train_tensors = data.train.images.to(ctx.device), data.train.labels.to(ctx.device)
        self.mixing = batch_mixing(config.mixup_alpha, config.cutmix_alpha, len(data.train.classes)) \
            if config.augment else None

    @property
    def steps_per_epoch(self) -> int:
        """Global batches per epoch: whole batches of the training set, or of repeated augmentation's share of it."""
        n, cfg = len(self.data.train), self.config
        return repeated_steps(n, self.ctx.world_size, cfg.batch_size) if cfg.ra_reps else n // cfg.batch_size

    def order(self, epoch: int) -> torch.Tensor:
        """The epoch's global order of training images, seeded by (seed, epoch)."""
        cfg, seed = self.config, self.config.seed * 100_003 + epoch
        if cfg.ra_reps:
            return repeated_order(len(self.data.train), cfg.ra_reps, seed, self.ctx.world_size, cfg.batch_size)
        return epoch_order(len(self.data.train), seed)

    def side(self, epoch: int, epochs: int) -> int:
        """The training side of ``epoch`` of ``epochs``: progressive resizing's, else the recipe's training crop."""
        cfg, crop = self.config, self.data.transforms.train_crop
        if cfg.min_res is None:
            return crop
        end = cfg.end_ramp if cfg.end_ramp is not None else epochs - 1
        return resolution(epoch, cfg.min_res, cfg.max_res or crop, cfg.start_ramp, end, cfg.res_step)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 batch to network input with the recorded preprocessing (so ``resnets eval`` matches exactly)."""
        x = self.data.preprocessing.normalize(x)
        return x.contiguous(memory_format=torch.channels_last) if self.config.channels_last else x

    def train(self, epoch: int, start: int, steps: int, aug_rng: torch.Generator, side: int | None = None
              ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's network inputs and targets (class indices, or soft targets when mixing) for steps
        ``start``..``steps`` of ``epoch``, on the device, at ``side`` (:meth:`side`; default the training crop).
        An unreadable streamed share comes out empty."""
        cfg, dev, data = self.config, self.ctx.device, self.data
        local = local_slice(cfg.batch_size, self.ctx)
        order = self.order(epoch)
        cropped = cfg.decode == "crop"  # the workers crop, flip and run the policy
        if data.streaming:
            # crop decoding: a seed per place in the epoch's order, from (seed, epoch) alone
            seeds = draw_seeds(len(order), torch.Generator().manual_seed(cfg.seed * 100_003 + epoch + CROP_SEEDS)) \
                if cropped else None
            self.train_order.set_epoch(order, start, steps, seeds, side or data.transforms.train_crop)
            batches: Iterator = iter(self.train_loader)
        else:
            images, labels = self.train_tensors
        for i in range(start, steps):
            share = order[i * cfg.batch_size:(i + 1) * cfg.batch_size][local]
            params = data.transforms.sample(cfg.batch_size, aug_rng)[local]
            mix_seed = int(draw_seeds(self.ctx.world_size, aug_rng)[self.ctx.rank]) if self.mixing else 0
            if data.streaming:
                x, y, kept = self._device_batch(next(batches), data.train, share)
                params = params[kept]
            else:
                idx = share.to(dev)
                x, y = images[idx], labels[idx]
            if not len(y):
                yield x, y
                continue
            if not cropped:
                x = data.transforms.apply(x, params, side)
            x = data.transforms.erase(self.normalize(x), params)
            if self.mixing is not None:
                x, y = mix(self.mixing, x, y, mix_seed)
            yield (x.contiguous(memory_format=torch.channels_last) if cfg.channels_last else x), y

    def eval(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's evaluation images (every world_size-th) and labels, in batches, on the device."""
        if self.data.streaming:
            for batch in self.eval_loader:
                x, y, _ = self._device_batch(batch, self.data.eval)
                if len(y):
                    yield x, y
            return
        data, dev = self.data.eval, self.ctx.device
        idx = torch.arange(self.ctx.rank, len(data), self.ctx.world_size)
        for chunk in idx.split(self.config.eval_batch_size):
            yield data.images[chunk].to(dev), data.labels[chunk].to(dev)

    def every_rank_has_images(self, n: int, step: int, epoch: int) -> bool:
        """Whether ``step`` of ``epoch`` can train: no process's share of the batch (``n`` images here) is empty.

        Only a streamed batch whose files are all bad is empty. Every process must take the same
        decision, or one skips DDP's gradient all-reduce that the others wait in, and the job hangs.
        """
        if not self.data.streaming:
            return True
        (empty,) = all_sum([float(n == 0)], self.ctx)
        if empty and self.ctx.is_main:
            tqdm.write(f"resnets train: step {step + 1} of epoch {epoch + 1} skipped: {int(empty)} of "
                       f"{self.ctx.world_size} processes have no readable image in their share of the batch",
                       file=sys.stderr)
        return not empty

    def _device_batch(self, batch: ImageBatch, images: ImageList,
                      share: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A streamed batch's good images, their labels (on the device) and places in ``share``; bad files
        reported once each."""
        for _, message in batch.errors:
            if message not in self.skipped:
                self.skipped.add(message)
                tqdm.write(f"resnets train: skipping a bad image ({len(self.skipped)} so far): {message}",
                           file=sys.stderr)
        dev = self.ctx.device
        kept = torch.zeros(0, dtype=torch.long)
        if share is not None:  # in order, the good files a place each (repeated augmentation repeats an index)
            good, places = batch.indices.tolist(), []
            for p, j in enumerate(share.tolist()):
                if len(places) < len(good) and good[len(places)] == j:
                    places.append(p)
            kept = torch.tensor(places, dtype=torch.long)
        return (batch.images.to(dev, non_blocking=True), images.labels[batch.indices].to(dev, non_blocking=True),
                kept)
