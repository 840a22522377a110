"""The training loop behind ``resnets train`` and ``resnets.train.train(config)``.

Data live in memory as uint8 tensors (decoded once); each step draws the global batch from a
per-epoch permutation seeded by (seed, epoch) and augments it with a generator whose state is
checkpointed, so a resumed run, or a run on another number of processes, sees the same batches.
Image folders too large for memory stream instead (``streaming``): DataLoader workers decode and
augment each batch, with per-sample seeds that keep the same guarantees.
"""

from __future__ import annotations

import importlib.util
import math
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..data.cifar import ImageTensors, split_source, load_image_tensors
from ..data.images import ImageBatch
from ..factory import create_model
from .augment import crop_flip, normalize, sample_crop_flip
from .checkpoint import load_checkpoint, model_state, save_checkpoint, save_weights, unwrap
from .config import TrainConfig, default_image_size
from .distributed import DistContext, all_sum, barrier, local_slice, setup, teardown
from .metrics import MetricsLog
from .schedule import lr_at
from .streaming import (
    EpochBatches, EvalBatches, ImageFolderList, choose_data_mode, eval_transform, image_folder_split, make_loader,
    train_transform,
)

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
FREEZE_MODES = ("none", "backbone", "bn")
CROP_PAD = 4


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left in place."""


@dataclass
class RunData:
    train: ImageTensors | ImageFolderList  # decoded in memory, or file lists when streaming
    eval: ImageTensors | ImageFolderList
    eval_split: str
    mean: torch.Tensor  # broadcastable to (C, H, W), on the [0, 1] pixel scale
    std: torch.Tensor
    image_size: int

    @property
    def streaming(self) -> bool:
        return isinstance(self.train, ImageFolderList)


def train(config: TrainConfig, model: nn.Module | None = None) -> dict[str, Any]:
    """Train ``config.model`` (or the given ``model``) and return the last epoch's metrics.

    Under ``torchrun`` every process calls this; they train one model with DDP and rank 0 writes.
    """
    _check(config)
    ctx = setup(config.device)
    try:
        return _Trainer(config, ctx, model).run()
    finally:
        teardown(ctx)


def _check(config: TrainConfig) -> None:
    if config.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {config.precision!r}")
    if config.freeze not in FREEZE_MODES:
        raise ValueError(f"freeze must be one of {', '.join(FREEZE_MODES)}, got {config.freeze!r}")
    if config.normalize not in ("channel", "pixel"):
        raise ValueError(f"normalize must be 'channel' or 'pixel', got {config.normalize!r}")
    if not config.data:
        raise ValueError("no training data given (config.data / --data)")
    if not config.epochs and not config.max_steps:
        raise ValueError("give the run length as epochs or max_steps")
    if config.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ImportError("--tensorboard needs the tensorboard package: pip install 'resnets[tensorboard]'")


def load_run_data(config: TrainConfig, ctx: DistContext) -> RunData:
    """Train and evaluation tensors (file lists when streaming); rank 0 decodes first, the others read its cache."""
    size = config.image_size or default_image_size(config.model)
    streaming = choose_data_mode(config.data_mode, config.data, size) == "stream"
    if streaming and config.normalize == "pixel":
        raise ValueError("normalize='pixel' needs the per-pixel mean of the decoded training set; "
                         "use --data-mode memory or channel normalisation when streaming")
    if not ctx.is_main:
        barrier(ctx)
    load = image_folder_split if streaming else partial(load_image_tensors, image_size=size, cache_dir=config.cache_dir)
    train_set = load(config.data, "train")
    if config.val_split:
        perm = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(config.seed))
        eval_set, train_set = train_set.subset(perm[-config.val_split:]), train_set.subset(perm[: -config.val_split])
        split = "val"
    else:  # labelled by the training split's class names: its folders may lack, or add, a class
        eval_set, split = load(config.data, "test"), "test"
        try:
            eval_set = eval_set.relabel(train_set.classes)
        except ValueError as e:
            raise ValueError(f"{split_source(Path(config.data), split)}: {e}") from e
    if ctx.is_main:
        barrier(ctx)
    if config.train_subset:
        train_set = _random_subset(train_set, config.train_subset, config.seed + 1)
    if config.test_subset:
        eval_set = _random_subset(eval_set, config.test_subset, config.seed + 2)
    if config.normalize == "pixel":  # the paper: subtract the per-pixel mean of the training images
        mean, std = train_set.images.double().mean(0).div(255).float(), torch.ones(1, 1, 1)
    else:
        mean, std = torch.tensor(config.mean).view(-1, 1, 1), torch.tensor(config.std).view(-1, 1, 1)
    return RunData(train_set, eval_set, split, mean, std, size)


def _random_subset(data: ImageTensors | ImageFolderList, n: int, seed: int) -> ImageTensors | ImageFolderList:
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    return data.subset(perm[: min(n, len(data))].sort().values)


def build_model(config: TrainConfig, num_classes: int) -> nn.Module:
    """The model of ``config``: fresh, or from ``config.weights`` with a new classifier if the class count differs."""
    if config.weights:
        model = create_model(config.model, weights=config.weights, **config.model_kwargs)
        if model.num_classes != num_classes:
            model.reset_classifier(num_classes)
    else:
        model = create_model(config.model, num_classes=num_classes, **config.model_kwargs)
    if config.freeze == "backbone":
        for name, p in model.named_parameters():
            p.requires_grad = name.startswith("fc.")
    return model


def set_train_mode(model: nn.Module, freeze: str) -> None:
    """Training mode, except BatchNorm layers stay in eval mode (frozen statistics) when frozen."""
    model.train()
    if freeze != "none":
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


class _Trainer:
    def __init__(self, config: TrainConfig, ctx: DistContext, model: nn.Module | None) -> None:
        self.config, self.ctx = config, ctx
        self.out = Path(config.out)
        if config.threads:
            torch.set_num_threads(config.threads)
        if config.deterministic:
            torch.use_deterministic_algorithms(True)
        torch.manual_seed(config.seed)
        self.data = load_run_data(config, ctx)
        self.model = model if model is not None else build_model(config, len(self.data.train.classes))
        if config.sync_bn and ctx.enabled:
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        fmt = torch.channels_last if config.channels_last else torch.contiguous_format
        self.model.to(ctx.device, memory_format=fmt)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                                         weight_decay=config.weight_decay, nesterov=config.nesterov)
        self.scaler = torch.amp.GradScaler(ctx.device.type, enabled=config.precision == "fp16")
        self.steps_per_epoch = len(self.data.train) // config.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"{len(self.data.train)} training images are fewer than one batch of {config.batch_size}")
        self.total_steps = config.max_steps or config.epochs * self.steps_per_epoch
        self.epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        self.aug_rng = torch.Generator().manual_seed(config.seed)
        self.skipped: set[str] = set()  # bad image files met by this process (streaming)
        self.tb = None  # TensorBoard SummaryWriter (rank 0, --tensorboard)
        if self.data.streaming:
            size, pin = self.data.image_size, ctx.device.type == "cuda"
            local = local_slice(config.batch_size, ctx)
            self.train_order = EpochBatches(len(self.data.train), config.batch_size, local)
            augment = train_transform(size) if config.augment else eval_transform(size)
            self.train_loader = make_loader(self.data.train, augment, self.train_order, config.workers, pin)
            eval_order = EvalBatches(len(self.data.eval), config.eval_batch_size, ctx.rank, ctx.world_size)
            self.eval_loader = make_loader(self.data.eval, eval_transform(size), eval_order, config.workers, pin)
        # progress of the run; replaced by the checkpoint's on resume
        self.step = self.epoch = self.epoch_step = 0
        self.meters = [0.0, 0.0, 0.0]  # loss sum, correct, images of the epoch so far
        self.warming_up = config.warmup_lr is not None
        self.error_ema = 1.0
        self.best_error = math.inf
        if config.resume:
            self._resume()
        self.net: nn.Module = self.model
        if ctx.enabled:
            ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if config.compile:
            self.net = torch.compile(self.net)

    # --- state ------------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        return {
            "state_dict": model_state(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step, "epoch": self.epoch, "epoch_step": self.epoch_step, "meters": list(self.meters),
            "aug_rng": self.aug_rng.get_state(), "torch_rng": torch.get_rng_state(),
            "warming_up": self.warming_up, "error_ema": self.error_ema, "best_error": self.best_error,
            "pixel_mean": self.data.mean.contiguous(), "pixel_std": self.data.std.contiguous(),
            "classes": list(self.data.train.classes), "model": self.config.model,
        }

    def _resume(self) -> None:
        path = self.out / "last.pt"
        if not path.is_file():
            if self.ctx.is_main:
                print(f"resnets train: no checkpoint at {path}; starting from scratch")
            return
        state = load_checkpoint(path)
        try:
            unwrap(self.model).load_state_dict(state["state_dict"])
        except RuntimeError as e:
            raise ValueError(f"{path}: checkpoint does not fit model {self.config.model}: {e}") from e
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.aug_rng.set_state(state["aug_rng"])
        torch.set_rng_state(state["torch_rng"])
        self.step, self.epoch, self.epoch_step = state["step"], state["epoch"], state["epoch_step"]
        self.meters = list(state["meters"])
        self.warming_up, self.error_ema, self.best_error = state["warming_up"], state["error_ema"], state["best_error"]

    def _save(self, row: dict[str, Any] | None = None, is_best: bool = False) -> None:
        if not self.ctx.is_main:
            return
        state = self._state()
        save_checkpoint(self.out / "last.pt", state)
        if self.tb is not None:  # TensorBoard's events keep up with the checkpoints
            self.tb.flush()
        meta = {"model": self.config.model, "classes": list(self.data.train.classes), "recipe": self.config.recipe,
                "normalize": self.config.normalize, "mean": list(self.config.mean), "std": list(self.config.std),
                "epoch": self.epoch, "step": self.step}
        if row is not None:
            meta |= {"eval_error": row["eval_error"], "eval_split": row["eval_split"]}
        save_weights(self.out / "model.safetensors", state["state_dict"], meta)
        if is_best:
            for src, dst in (("last.pt", "best.pt"), ("model.safetensors", "best.safetensors")):
                shutil.copyfile(self.out / src, self.out / ".best.tmp")
                (self.out / ".best.tmp").replace(self.out / dst)

    # --- the loop ---------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        cfg, ctx = self.config, self.ctx
        if ctx.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / ".config.json.tmp").write_text(cfg.to_json())
            (self.out / ".config.json.tmp").replace(self.out / "config.json")
            self.log = MetricsLog(self.out, keep_epochs=self.epoch)
            if cfg.tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                # purge_step: a resumed run drops the events logged after its checkpoint
                self.tb = SummaryWriter(str(self.out / "tb"), purge_step=self.step + 1 if self.step else None)
        dev = ctx.device
        if not self.data.streaming:
            self.train_tensors = self.data.train.images.to(dev), self.data.train.labels.to(dev)
        mean, std = self.data.mean.to(dev), self.data.std.to(dev)
        criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        row: dict[str, Any] = {}
        while self.epoch < self.epochs:
            steps = min(self.steps_per_epoch, self.total_steps - self.epoch * self.steps_per_epoch)
            set_train_mode(self.model, cfg.freeze)
            bar = tqdm(total=steps, initial=self.epoch_step, desc=f"epoch {self.epoch + 1}/{self.epochs}",
                       disable=not (ctx.is_main and cfg.progress), leave=False, dynamic_ncols=True)
            start, seen = time.perf_counter(), 0
            for i, (x, y) in enumerate(self._train_batches(steps), start=self.epoch_step):
                if self._every_rank_has_images(len(y), i):
                    self._train_step(normalize(x, mean, std, cfg.channels_last), y, criterion)
                self.epoch_step = i + 1
                seen += cfg.batch_size
                loss_sum, correct, count = self.meters
                if ctx.is_main and cfg.progress and count and (i % 10 == 0 or i + 1 == steps):
                    bar.set_postfix(loss=f"{loss_sum / count:.3f}", acc=f"{correct / count:.3f}",
                                    img_s=f"{seen / (time.perf_counter() - start):.0f}", refresh=False)
                bar.update(1)
                if cfg.checkpoint_every_steps and self.step % cfg.checkpoint_every_steps == 0 and i + 1 < steps:
                    self._save()
            bar.close()
            elapsed = time.perf_counter() - start
            row = self._end_epoch(elapsed, seen)
        if ctx.is_main:
            self._plot()
            if self.tb is not None:
                self.tb.close()
        return {**row, "run_dir": str(self.out), "best_error": self.best_error, "skipped_images": len(self.skipped)}

    def _train_batches(self, steps: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's uint8 images and labels for the epoch's steps from ``epoch_step`` on, on the device."""
        cfg, dev = self.config, self.ctx.device
        epoch_seed = cfg.seed * 100_003 + self.epoch
        if self.data.streaming:
            self.train_order.set_epoch(epoch_seed, self.epoch_step, steps)
            for batch in self.train_loader:
                yield self._device_batch(batch, self.data.train)
            return
        images, labels = self.train_tensors
        local = local_slice(cfg.batch_size, self.ctx)
        perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(epoch_seed))
        for i in range(self.epoch_step, steps):
            idx = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            offsets, flips = sample_crop_flip(cfg.batch_size, CROP_PAD, self.aug_rng)
            idx = idx[local].to(dev)
            x = images[idx]
            if cfg.augment:
                x = crop_flip(x, offsets[local], flips[local], CROP_PAD)
            yield x, labels[idx]

    def _device_batch(self, batch: ImageBatch, files: ImageFolderList) -> tuple[torch.Tensor, torch.Tensor]:
        """A streamed batch's good images and their labels on the device; its bad files reported once each."""
        for _, message in batch.errors:
            if message not in self.skipped:
                self.skipped.add(message)
                tqdm.write(f"resnets train: skipping a bad image ({len(self.skipped)} so far): {message}",
                           file=sys.stderr)
        dev = self.ctx.device
        return batch.images.to(dev, non_blocking=True), files.labels[batch.indices].to(dev, non_blocking=True)

    def _every_rank_has_images(self, n: int, i: int) -> bool:
        """Whether step ``i`` can train: no process's share of the batch (``n`` images here) is empty.

        Only a streamed batch whose files are all bad is empty. Every process must take the same
        decision, or one skips DDP's gradient all-reduce that the others wait in, and the job hangs.
        """
        if not self.data.streaming:
            return True
        (empty,) = all_sum([float(n == 0)], self.ctx)
        if empty and self.ctx.is_main:
            tqdm.write(f"resnets train: step {i + 1} of epoch {self.epoch + 1} skipped: {int(empty)} of "
                       f"{self.ctx.world_size} processes have no readable image in their share of the batch",
                       file=sys.stderr)
        return not empty

    def _train_step(self, x: torch.Tensor, y: torch.Tensor, criterion: nn.Module) -> None:
        cfg = self.config
        lr = lr_at(self.step, self.total_steps, cfg, self.warming_up)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        dtype = PRECISIONS[cfg.precision]
        with torch.autocast(self.ctx.device.type, dtype=dtype, enabled=dtype is not None):
            logits = self.net(x)
        loss = criterion(logits.float(), y)
        correct = (logits.argmax(1) == y).sum()
        loss_sum, n_correct, count = all_sum([loss.item() * len(y), correct.item(), len(y)], self.ctx)
        if not math.isfinite(loss_sum):
            last = self.out / "last.pt"
            kept = f"the last good checkpoint is {last} (epoch {self.epoch})" if last.is_file() else "no checkpoint was written"
            raise TrainingDiverged(
                f"loss is {loss_sum / count} at step {self.step} (epoch {self.epoch + 1}, lr {lr:g}); training stopped, "
                f"{kept}. Lower the learning rate or use --precision fp32."
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        if self.tb is not None and cfg.tensorboard_every_steps and self.step % cfg.tensorboard_every_steps == 0:
            self.tb.add_scalar("train/step_loss", loss_sum / count, self.step)
            self.tb.add_scalar("train/lr", lr, self.step)
        self.meters = [self.meters[0] + loss_sum, self.meters[1] + n_correct, self.meters[2] + count]
        if self.warming_up:
            self.error_ema = 0.9 * self.error_ema + 0.1 * (1 - n_correct / count)
            self.warming_up = self.error_ema >= cfg.warmup_until_error

    def _end_epoch(self, elapsed: float, seen: int) -> dict[str, Any]:
        loss_sum, correct, count = self.meters
        if not count:  # every step of the epoch was skipped: all its streamed files were unreadable
            raise ValueError(f"epoch {self.epoch + 1}: no readable training image in {self.config.data}")
        eval_loss, eval_error = self.evaluate()
        self.epoch, self.epoch_step, self.meters = self.epoch + 1, 0, [0.0, 0.0, 0.0]
        row = {
            "epoch": self.epoch, "step": self.step,
            "lr": lr_at(self.step - 1, self.total_steps, self.config, self.warming_up),
            "train_loss": loss_sum / count, "train_error": 1 - correct / count,
            "eval_loss": eval_loss, "eval_error": eval_error, "eval_split": self.data.eval_split,
            "epoch_time_s": round(elapsed, 2), "images_per_s": round(seen / max(elapsed, 1e-9), 1),
        }
        is_best = eval_error <= self.best_error
        self.best_error = min(self.best_error, eval_error)
        self._save(row, is_best)
        if self.ctx.is_main:
            self.log.append(row)
            if self.tb is not None:  # per epoch, at the epoch's last step, under the metrics.csv names
                for key in ("train_loss", "train_error", "eval_loss", "eval_error", "lr", "images_per_s"):
                    self.tb.add_scalar(f"epoch/{key}", row[key], self.step)
            tqdm.write(f"epoch {self.epoch}/{self.epochs}  step {self.step}  train loss {row['train_loss']:.4f}  "
                       f"train err {row['train_error']:.2%}  {row['eval_split']} loss {eval_loss:.4f}  "
                       f"{row['eval_split']} err {eval_error:.2%}  {row['images_per_s']:.0f} img/s")
        return row

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        """Loss and error on the evaluation split, each rank taking every world_size-th image."""
        cfg, dev = self.config, self.ctx.device
        model = unwrap(self.model)
        model.eval()
        mean, std = self.data.mean.to(dev), self.data.std.to(dev)
        dtype = PRECISIONS[cfg.precision]
        loss_sum = correct = count = 0.0
        for x, y in self._eval_batches():
            x = normalize(x, mean, std, cfg.channels_last)
            count += len(y)
            with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
                logits = model(x).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
        # every rank gets here once, even one with no readable image (its streamed batches are all skipped)
        loss_sum, correct, count = all_sum([loss_sum, correct, count], self.ctx)
        if not count:
            raise ValueError(f"no readable image in the {self.data.eval_split} split")
        return loss_sum / count, 1 - correct / count

    def _eval_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's evaluation images (every world_size-th) and labels, in batches, on the device."""
        if self.data.streaming:
            for batch in self.eval_loader:
                x, y = self._device_batch(batch, self.data.eval)
                if len(y):
                    yield x, y
            return
        data, dev = self.data.eval, self.ctx.device
        idx = torch.arange(self.ctx.rank, len(data), self.ctx.world_size)
        for chunk in idx.split(self.config.eval_batch_size):
            yield data.images[chunk].to(dev), data.labels[chunk].to(dev)

    def _plot(self) -> None:
        from .plots import plot_run

        try:
            plot_run(self.out)
        except ImportError:
            print("resnets train: matplotlib is not installed, no plot drawn (pip install 'resnets[plot]')")
