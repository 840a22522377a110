"""The training loop behind ``resnets train`` and ``resnets.train(...)``.

Data live in memory as uint8 tensors (decoded once), or stream from the files when too large
(``streaming``); either way each step draws the global batch from a per-epoch permutation seeded by
(seed, epoch) and augments it with the recipe's transforms from a generator whose state is
checkpointed, so a resumed run, or a run on another number of processes, sees the same batches.
Every checkpoint's weights file carries a :class:`~resnets.weights.WeightsEntry`: architecture,
class names, the exact evaluation preprocessing, and the run's metrics.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import importlib.util
import math
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.v2.functional import center_crop
from tqdm import tqdm

from ..choices import FREEZE_MODES, TRAIN_PRECISIONS
from ..cpu import cpu_info
from ..data.images import ImageBatch
from ..data.source import ImageList, read_split
from ..data.tensors import ImageTensors, decode_split
from ..errors import BadInput, MissingExtra
from ..factory import create_model
from ..preprocess import Preprocessing
from ..progress import progress_bar
from ..weights.entry import WeightsEntry, save_safetensors
from ..weights.loading import weights_entry
from .augment import RecipeTransforms
from .checkpoint import load_checkpoint, model_state, save_checkpoint, unwrap
from .config import TrainConfig, default_image_size, run_config
from .distributed import DistContext, all_sum, barrier, local_slice, setup, teardown
from .metrics import MetricsLog, read_metrics
from .schedule import lr_at
from .streaming import EpochBatches, EvalBatches, choose_data_mode, epoch_order, make_loader

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # autocast dtype of each


def resolve_precision(precision: str, device: torch.device) -> str:
    """``precision``, with ``"auto"`` made bf16 where ``device`` computes bf16 natively (a CUDA GPU that supports it,
    a CPU with AVX-512 BF16 or AMX) and fp32 elsewhere: emulated bf16 trains several times slower than fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_info().native_bf16 else "fp32"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left in place."""


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


def train(config: TrainConfig | None = None, /, *, model: str | nn.Module | None = None, **options: Any
          ) -> dict[str, Any]:
    """Train a model and return the run's metrics: the last epoch's, with ``history`` (one row per epoch).

    ``train(model="resnet20", data="DATA", epochs=30)`` takes the options of ``resnets train`` by their
    :class:`TrainConfig` names (``recipe="paper-cifar"``, ``resume=True, out="runs/x"``...); or pass a whole
    ``TrainConfig``. ``model`` is a registry name or an ``nn.Module`` to train as is. A progress bar shows
    on a terminal and in a notebook (``progress=False`` hides it).

    Under ``torchrun`` every process calls this; they train one model with DDP and rank 0 writes.
    torch's global settings that a run changes (threads, deterministic algorithms, the RNG) are
    restored on return.
    """
    module = model if isinstance(model, nn.Module) else None
    if config is None:
        config = run_config(model=None if module is not None else model, **options)
    elif options or isinstance(model, str):
        raise TypeError("train() takes a TrainConfig or options, not both")
    _check(config)
    with _restored_torch_state():
        ctx = setup(config.device)
        config = dataclasses.replace(config, precision=resolve_precision(config.precision, ctx.device))
        try:
            if config.precision == "fp16" and ctx.device.type != "cuda":
                raise ValueError(f"precision='fp16' is for CUDA GPUs; on the {ctx.device.type} it runs about 100x "
                                 "slower than fp32 (no half-precision kernels): use precision='bf16' or precision='fp32'")
            with _run_folder(Path(config.out), config.resume, ctx.is_main):
                return _Trainer(config, ctx, module).run()
        finally:
            teardown(ctx)


@contextlib.contextmanager
def _run_folder(out: Path, resume: bool, is_main: bool) -> Iterator[None]:
    """Refuse to overwrite an earlier run unless resuming it, and hold the folder against a second writer."""
    if not is_main:
        yield
        return
    if not resume and ((out / "last.pt").exists() or (out / "metrics.jsonl").exists()):
        raise ValueError(f"{out} already holds a training run (last.pt, metrics): continue it with resume=True, "
                         "or give a new out= folder")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"another 'resnets train' is writing to {out} right now; give this run "
                             "another out= folder") from None
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def _restored_torch_state() -> Iterator[None]:
    """Put back torch's thread count, deterministic-algorithms mode and CPU RNG after a run."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    rng = torch.get_rng_state()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.set_rng_state(rng)


def _check(config: TrainConfig) -> None:
    if config.precision not in TRAIN_PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(TRAIN_PRECISIONS)}, got {config.precision!r}")
    if config.freeze not in FREEZE_MODES:
        raise ValueError(f"freeze must be one of {', '.join(FREEZE_MODES)}, got {config.freeze!r}")
    if config.normalize not in ("channel", "pixel", "weights"):
        raise ValueError(f"normalize must be 'channel', 'pixel' or 'weights', got {config.normalize!r}")
    if not config.data:
        raise BadInput("no training data given (data=)")
    if not config.epochs and not config.max_steps:
        raise ValueError("give the run length as epochs or max_steps")
    for name in ("epochs", "max_steps", "batch_size", "eval_batch_size"):
        value = getattr(config, name)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise BadInput(f"{name}= must be a positive integer, got {value!r}")
    if config.freeze == "backbone" and not config.weights:
        raise BadInput("freeze='backbone' trains the classifier alone, on top of pretrained weights: "
                       "give weights= (a registry name or a file)")
    if config.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise MissingExtra("tensorboard=True needs the tensorboard package: pip install 'resnets[tensorboard]'")


def load_run_data(config: TrainConfig, ctx: DistContext) -> RunData:
    """Train and evaluation data (decoded tensors, or image lists when streaming) and the recipe's transforms.

    Rank 0 decodes first, the others then read its cache.
    """
    size = config.image_size or default_image_size(config.model)
    transforms = RecipeTransforms(size, config.augmentation if config.augment else "none", config.eval_resize)
    train_list = read_split(config.data, "train")
    if config.val_split:
        perm = torch.randperm(len(train_list), generator=torch.Generator().manual_seed(config.seed))
        eval_list, train_list = train_list.subset(perm[-config.val_split:]), train_list.subset(perm[: -config.val_split])
        split = "val"
    else:  # labelled by the training split's class names: its folders may lack, or add, a class
        eval_list, split = read_split(config.data, "test"), "test"
        try:
            eval_list = eval_list.relabel(train_list.classes)
        except ValueError as e:
            raise ValueError(f"{eval_list.origin}: {e}") from e
    if config.train_subset:
        train_list = _random_subset(train_list, config.train_subset, config.seed + 1)
    if config.test_subset:
        eval_list = _random_subset(eval_list, config.test_subset, config.seed + 2)
    streaming = choose_data_mode(config.data_mode, len(train_list), transforms.decode_sizes("train")[1]) == "stream"
    if streaming and config.normalize == "pixel":
        raise ValueError("normalize='pixel' needs the per-pixel mean of the decoded training set; "
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
    preprocessing = Preprocessing(tuple(config.mean), tuple(config.std), resize_size=transforms.resize, crop_size=size)
    entry = weights_entry(config.model, config.weights) if config.normalize == "weights" and config.weights else None
    if entry is not None:  # the input the pretrained weights were trained on
        own = entry.preprocessing
        preprocessing = dataclasses.replace(preprocessing, mean=own.mean, std=own.std, scale=own.scale,
                                            channel_order=own.channel_order)
    if config.normalize == "pixel":  # the paper: subtract the per-pixel mean of the training images
        mean = center_crop(train_set.images, [size, size]).double().mean(0).div(255).float()
        preprocessing = Preprocessing((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), resize_size=transforms.resize,
                                      crop_size=size, pixel_mean=tuple(mean.flatten().tolist()))
    return RunData(train_set, eval_set, split, transforms, preprocessing)


def _decode(images: ImageList, transforms: RecipeTransforms, split: str, config: TrainConfig) -> ImageTensors:
    resize, crop = transforms.decode_sizes(split)
    return decode_split(images, transforms.decoder(split), f"resize {resize} crop {crop}", cache_dir=config.cache_dir)


def _random_subset(data: ImageList, n: int, seed: int) -> ImageList:
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
        self.started = time.perf_counter()  # the run's wall clock counts data loading, compilation and evaluation
        self.wall_before = 0.0  # wall seconds of the run before a resume
        self.out = Path(config.out)
        if config.threads:
            torch.set_num_threads(config.threads)
        if config.deterministic:
            torch.use_deterministic_algorithms(True)
        self.data = load_run_data(config, ctx)
        torch.manual_seed(config.seed)  # after the data: decoding (DataLoader workers) draws from the global RNG
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
            n = len(self.data.train)
            raise ValueError(f"{n} training images are fewer than one batch of {config.batch_size}: "
                             f"use a smaller batch_size=, at most {n}")
        self.total_steps = config.max_steps or config.epochs * self.steps_per_epoch
        self.epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        self.aug_rng = torch.Generator().manual_seed(config.seed)
        self.skipped: set[str] = set()  # bad image files met by this process (streaming)
        self.tb = None  # TensorBoard SummaryWriter (rank 0, --tensorboard)
        if self.data.streaming:
            pin = ctx.device.type == "cuda"
            local = local_slice(config.batch_size, ctx)
            self.train_order = EpochBatches(len(self.data.train), config.batch_size, local)
            self.train_loader = make_loader(self.data.train, self.data.transforms.decoder("train"),
                                            self.train_order, config.workers, pin)
            eval_order = EvalBatches(len(self.data.eval), config.eval_batch_size, ctx.rank, ctx.world_size)
            self.eval_loader = make_loader(self.data.eval, self.data.transforms.decoder("eval"), eval_order,
                                           config.workers, pin)
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
            "wall_s": self._wall(),
            "classes": list(self.data.train.classes), "model": self.config.model,
        }

    def weights_entry(self, row: dict[str, Any] | None) -> WeightsEntry:
        """What the weights written now are: the model file contract, as for any published weights."""
        cfg, data = self.config, self.data
        model = unwrap(self.model)
        kwargs = {**cfg.model_kwargs, "num_classes": model.num_classes}
        metrics, measured_on = {}, ""
        training: dict[str, Any] = {"recipe": cfg.recipe, "epoch": self.epoch, "step": self.step,
                                    "precision": cfg.precision, "seed": cfg.seed}
        if row is not None:
            metrics = {"top1": round(100 * (1 - row["eval_error"]), 4)}
            measured_on = (f"the {row['eval_split']} split of {cfg.data} ({len(data.eval)} images) after epoch "
                           f"{row['epoch']}, fp32")
            training |= {"eval_error": row["eval_error"], "eval_loss": row["eval_loss"], "eval_split": row["eval_split"]}
        return WeightsEntry(
            name=f"{cfg.model}.{Path(cfg.out).name}", model=cfg.model, url=None, sha256=None,
            file_format="safetensors", model_kwargs=kwargs, preprocessing=data.preprocessing,
            classes=tuple(data.train.classes), metrics=metrics, metrics_data=measured_on,
            source=f"resnets train --model {cfg.model} --data {cfg.data} --recipe {cfg.recipe} (config.json of "
                   f"{cfg.out} has every option)" + (f", from weights {cfg.weights}" if cfg.weights else ""),
            license="the training data's terms apply", training=training,
        )

    def _resume(self) -> None:
        path = self.out / "last.pt"
        if not path.is_file():
            if self.ctx.is_main:
                print(f"resnets train: no checkpoint at {path}; starting from scratch")
            return
        state = load_checkpoint(path)
        if state.get("model", self.config.model) != self.config.model:
            raise ValueError(f"{path} is a run of {state['model']}, not {self.config.model}: resume it with "
                             f"model='{state['model']}' (or without model=)")
        try:
            unwrap(self.model).load_state_dict(state["state_dict"])
        except RuntimeError as e:
            first = str(e).splitlines()[1:2] or [str(e)[:200]]
            raise ValueError(f"{path}: checkpoint does not fit model {self.config.model}: {first[0].strip()}") from None
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.aug_rng.set_state(state["aug_rng"])
        torch.set_rng_state(state["torch_rng"])
        self.step, self.epoch, self.epoch_step = state["step"], state["epoch"], state["epoch_step"]
        self.meters = list(state["meters"])
        self.warming_up, self.error_ema, self.best_error = state["warming_up"], state["error_ema"], state["best_error"]
        self.wall_before = state.get("wall_s", 0.0)

    def _wall(self) -> float:
        """Wall seconds since the run started, over resumes (the clock of a time-to-accuracy table)."""
        return round(self.wall_before + time.perf_counter() - self.started, 1)

    def _save(self, row: dict[str, Any] | None = None, is_best: bool = False) -> None:
        if not self.ctx.is_main:
            return
        state = self._state()
        save_checkpoint(self.out / "last.pt", state)
        if self.tb is not None:  # TensorBoard's events keep up with the checkpoints
            self.tb.flush()
        save_safetensors(state["state_dict"], self.out / "model.safetensors", self.weights_entry(row))
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
        if cfg.resume and self.epoch >= self.epochs and ctx.is_main:
            print(f"resnets train: the run in {self.out} is already finished ({self.epoch} of {self.epochs} epochs); "
                  "nothing to do (raise epochs= to train further)")
        dev = ctx.device
        if not self.data.streaming:
            self.train_tensors = self.data.train.images.to(dev), self.data.train.labels.to(dev)
        criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        row: dict[str, Any] = {}
        while self.epoch < self.epochs:
            steps = min(self.steps_per_epoch, self.total_steps - self.epoch * self.steps_per_epoch)
            set_train_mode(self.model, cfg.freeze)
            bar = progress_bar(steps, f"epoch {self.epoch + 1}/{self.epochs}", ctx.is_main and cfg.progress,
                               unit="step", initial=self.epoch_step, leave=False, dynamic_ncols=True)
            start, seen = time.perf_counter(), 0
            for i, (x, y) in enumerate(self._train_batches(steps), start=self.epoch_step):
                if self._every_rank_has_images(len(y), i):
                    self._train_step(self._normalize(x), y, criterion)
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
        return {**row, "run_dir": str(self.out), "best_error": self.best_error, "skipped_images": len(self.skipped),
                "history": read_metrics(self.out) if ctx.is_main else []}

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 batch to network input with the recorded preprocessing (so ``resnets eval`` matches exactly)."""
        x = self.data.preprocessing.normalize(x)
        return x.contiguous(memory_format=torch.channels_last) if self.config.channels_last else x

    def _train_batches(self, steps: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's augmented uint8 images and labels for the epoch's steps from ``epoch_step`` on, on the device.

        Both storage modes take the same permutation and the same augmentation parameters, drawn for
        the global batch and sliced to this rank's share (and, streaming, to its readable files).
        """
        cfg, dev = self.config, self.ctx.device
        local = local_slice(cfg.batch_size, self.ctx)
        order = epoch_order(len(self.data.train), cfg.seed * 100_003 + self.epoch)
        if self.data.streaming:
            self.train_order.set_epoch(order, self.epoch_step, steps)
            batches: Iterator = iter(self.train_loader)
        else:
            images, labels = self.train_tensors
        for i in range(self.epoch_step, steps):
            share = order[i * cfg.batch_size:(i + 1) * cfg.batch_size][local]
            params = self.data.transforms.sample(cfg.batch_size, self.aug_rng)[local]
            if self.data.streaming:
                x, y, kept = self._device_batch(next(batches), self.data.train, share)
                params = params[kept]
            else:
                idx = share.to(dev)
                x, y = images[idx], labels[idx]
            yield (self.data.transforms.apply(x, params) if len(y) else x), y

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
        if share is not None:
            place = {int(j): p for p, j in enumerate(share.tolist())}
            kept = torch.tensor([place[int(j)] for j in batch.indices.tolist()], dtype=torch.long)
        return (batch.images.to(dev, non_blocking=True), images.labels[batch.indices].to(dev, non_blocking=True),
                kept)

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
                f"{kept}. Lower the learning rate" + (" or use precision='fp32'." if cfg.precision != "fp32" else ".")
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
            "wall_s": self._wall(),
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
        """Loss and error on the evaluation split, each rank taking every world_size-th image.

        Always in fp32, whatever the training precision: the recorded error is then exactly what
        ``resnets eval`` of the saved weights measures.
        """
        model = unwrap(self.model)
        model.eval()
        loss_sum = correct = count = 0.0
        for x, y in self._eval_batches():
            count += len(y)
            logits = model(self._normalize(x)).float()
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
                x, y, _ = self._device_batch(batch, self.data.eval)
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
