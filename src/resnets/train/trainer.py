"""The trainer: one run's model, optimizer and progress, epoch by epoch, checkpointed so that a resumed run
continues bit-identically.

Every checkpoint's weights file carries a :class:`~resnets.weights.WeightsEntry`: architecture,
class names, the exact evaluation preprocessing, and the run's metrics. With ``model_ema`` those are the
weights' moving average (:mod:`.ema`), evaluated each epoch beside the trained weights.

The step: the network input and targets from :class:`~resnets.train.batches.RunBatches`, the loss
(:class:`~resnets.train.mixing.TrainLoss`, with a teacher's soft labels mixed in: :mod:`.distill`), gradients
clipped to ``clip_grad_norm``, the optimizer of :mod:`.optim`, the average updated.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..atomic import atomic_path
from ..calibration import N_BINS, Reliability, reliability_sums
from ..errors import BadInput, JobFailed
from ..progress import progress_bar
from ..weights.entry import WeightsEntry, save_safetensors
from .batches import RunBatches
from .checkpoint import load_checkpoint, model_state, save_checkpoint, unwrap
from .config import TrainConfig
from .data import Splits, load_run_data
from .distill import distilled, load_teacher
from .distributed import DistContext, all_sum
from .ema import adjusted_decay, make_ema, update_ema
from .metrics import MetricsLog, read_metrics
from .mixing import TrainLoss
from .model import build_model, classifier_size, describe_fine_tuning, head_only, set_train_mode, with_backbone_lr
from .optim import make_optimizer, param_groups
from .precision import AUTOCAST_DTYPE, resolve_precision
from .schedule import lr_at


class TrainingDiverged(JobFailed):
    """The loss became NaN or infinite; the last good checkpoint is left in place."""


class Trainer:
    """A run of ``config`` on this process of ``ctx`` over ``splits`` (default: listed from ``config``): ``model``
    to train as is, else the config's model built around ``pretrained`` (its starting weights, read once by
    :func:`~resnets.train.model.load_weights`)."""

    def __init__(self, config: TrainConfig, ctx: DistContext, model: nn.Module | None = None,
                 pretrained: nn.Module | None = None, splits: Splits | None = None) -> None:
        self.config, self.ctx = config, ctx
        self.started = time.perf_counter()  # the run's wall clock counts data loading, compilation and evaluation
        self.wall_before = 0.0  # wall seconds of the run before a resume
        self.out = Path(config.out)
        if config.threads:
            torch.set_num_threads(config.threads)
        if config.deterministic:
            torch.use_deterministic_algorithms(True)
        self.data = load_run_data(config, ctx, splits, pretrained.pretrained_cfg if pretrained is not None else None)
        torch.manual_seed(config.seed)  # after the data: decoding (DataLoader workers) draws from the global RNG
        classes = self.data.train.classes
        self.model = model if model is not None else build_model(
            config, classifier_size(config, len(classes)), pretrained, classes)
        if config.sync_bn and ctx.enabled:
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        fmt = torch.channels_last if config.channels_last else torch.contiguous_format
        self.model.to(ctx.device, memory_format=fmt)
        groups = with_backbone_lr(param_groups(self.model, config.weight_decay, config.norm_weight_decay,
                                               config.bias_weight_decay), self.model, config.backbone_lr_scale)
        self.optimizer = make_optimizer(config.opt, groups, config.lr, config.momentum, config.nesterov,
                                        config.weight_decay)
        self.scaler = torch.amp.GradScaler(ctx.device.type, enabled=config.precision == "fp16")
        self.batches = RunBatches(self.data, config, ctx)
        self.steps_per_epoch = self.batches.steps_per_epoch
        if self.steps_per_epoch == 0:
            n = len(self.data.train)
            raise BadInput(f"{n} training images are fewer than one batch of {config.batch_size}: "
                             f"use a smaller batch_size=, at most {n}")
        self.total_steps = config.max_steps or config.epochs * self.steps_per_epoch
        self.epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        self.aug_rng = torch.Generator().manual_seed(config.seed)
        self.tb = None  # TensorBoard SummaryWriter (rank 0, --tensorboard)
        self.ema = make_ema(self.model, adjusted_decay(config.model_ema_decay, config.model_ema_steps,
                                                       config.batch_size, self.epochs)) if config.model_ema else None
        self.teacher = load_teacher(config.teacher, tuple(self.data.train.classes), ctx.device,
                                    resolve_precision("auto", ctx.device)) if config.teacher else None
        # progress of the run; replaced by the checkpoint's on resume
        self.step = self.epoch = self.epoch_step = 0
        self.meters = [0.0, 0.0, 0.0]  # loss sum, correct, images of the epoch so far
        self.warming_up = config.warmup_lr is not None
        self.error_ema = 1.0
        self.best_error = math.inf
        if config.resume:
            self._resume()
        self.net: nn.Module = self.model
        self.head_only: bool | None = None  # whether self.net was wrapped for the classifier alone

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
            "total_steps": self.total_steps,  # the length the schedule was computed for
            "ema": self.ema.state_dict() if self.ema is not None else None,
        }

    def weights_entry(self, row: dict[str, Any] | None) -> WeightsEntry:
        """What the weights written now are: the model file contract, as for any published weights."""
        cfg, data = self.config, self.data
        model = unwrap(self.model)
        kwargs = {**cfg.model_kwargs, "num_classes": model.num_classes}
        metrics, measured_on = {}, ""
        training: dict[str, Any] = {"recipe": cfg.recipe, "epoch": self.epoch, "step": self.step,
                                    "precision": cfg.precision, "seed": cfg.seed}
        if self.ema is not None:
            training["weights"] = (f"the exponential moving average (model_ema_decay {cfg.model_ema_decay}, every "
                                   f"{cfg.model_ema_steps} steps)")
        if row is not None:
            metrics = {"top1": round(100 * (1 - row["eval_error"]), 4)}
            measured_on = (f"the {row['eval_split']} split of {cfg.data} ({len(data.eval)} images) after epoch "
                           f"{row['epoch']}, fp32" + (", the weights' moving average" if self.ema is not None else ""))
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
            raise BadInput(f"{path} is a run of {state['model']}, not {self.config.model}: resume it with "
                             f"model='{state['model']}' (or without model=)")
        try:
            unwrap(self.model).load_state_dict(state["state_dict"])
        except RuntimeError as e:
            first = str(e).splitlines()[1:2] or [str(e)[:200]]
            raise BadInput(f"{path}: checkpoint does not fit model {self.config.model}: {first[0].strip()}") from None
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.aug_rng.set_state(state["aug_rng"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        torch.set_rng_state(state["torch_rng"])
        self.step, self.epoch, self.epoch_step = state["step"], state["epoch"], state["epoch_step"]
        self.meters = list(state["meters"])
        self.warming_up, self.error_ema, self.best_error = state["warming_up"], state["error_ema"], state["best_error"]
        self.wall_before = state.get("wall_s", 0.0)
        self._check_new_length(state.get("total_steps", self.total_steps))

    def _length(self, steps: int) -> str:
        """A run length as the config gives it: epochs, or steps (max_steps)."""
        count, unit = (steps, "step") if self.config.max_steps else (steps // self.steps_per_epoch, "epoch")
        return f"{count:,} {unit}{'s' if count != 1 else ''}"

    def _check_new_length(self, saved_total: int) -> None:
        """A resumed run with another length: shorter than what it trained is refused; longer recomputes the
        learning-rate schedule for the new length from where the run is (timm's ``--resume`` with more epochs),
        which this says, with the lr jump it makes."""
        if saved_total == self.total_steps:
            return
        done = self.step if self.config.max_steps else self.epoch * self.steps_per_epoch
        if done > self.total_steps:
            option = "max_steps" if self.config.max_steps else "epochs"
            raise BadInput(f"the run in {self.out} has already trained {self._length(done)}, more than the "
                           f"{self._length(self.total_steps)} asked for: to train it further, resume it with "
                           f"{option}= above {self._length(done).split()[0]}; its weights are "
                           f"{self.out / 'model.safetensors'}")
        if self.ctx.is_main and self.step < self.total_steps:
            old = lr_at(self.step, saved_total, self.config, self.warming_up, self.steps_per_epoch)
            new = lr_at(self.step, self.total_steps, self.config, self.warming_up, self.steps_per_epoch)
            print(f"resnets train: {self.out} was a run of {self._length(saved_total)}, now of "
                  f"{self._length(self.total_steps)}: the {self.config.schedule} learning-rate schedule is "
                  f"recomputed for {self._length(self.total_steps)} from step {self.step:,} on (as timm's --resume "
                  f"does), so the next step's lr is {new:.4g} where the old schedule had {old:.4g}", flush=True)

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
        weights = state["state_dict"] if self.ema is None else model_state(self.ema.module)
        save_safetensors(weights, self.out / "model.safetensors", self.weights_entry(row))
        if is_best:
            for src, dst in (("last.pt", "best.pt"), ("model.safetensors", "best.safetensors")):
                with atomic_path(self.out / dst) as tmp:
                    shutil.copyfile(self.out / src, tmp)

    # --- the loop ---------------------------------------------------------------------

    def run(self, on_epoch_end: Callable[[dict[str, Any]], bool | None] | None = None) -> dict[str, Any]:
        """Train to the run's length, or until ``on_epoch_end(row)`` answers true after an epoch (any rank)."""
        cfg, ctx = self.config, self.ctx
        if self.step >= self.total_steps:
            return self._finished_already()
        if ctx.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            with atomic_path(self.out / "config.json") as tmp:
                tmp.write_text(cfg.to_json())
            self.log = MetricsLog(self.out, keep_epochs=self.epoch)
            if cfg.tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                # purge_step: a resumed run drops the events logged after its checkpoint
                self.tb = SummaryWriter(str(self.out / "tb"), purge_step=self.step + 1 if self.step else None)
        criterion = TrainLoss(cfg.loss, cfg.label_smoothing, cfg.bce_target_thresh)
        row: dict[str, Any] = {}
        while self.epoch < self.epochs:
            steps = min(self.steps_per_epoch, self.total_steps - self.epoch * self.steps_per_epoch)
            self._start_epoch()
            bar = progress_bar(steps, f"epoch {self.epoch + 1}/{self.epochs}", ctx.is_main and cfg.progress,
                               unit="step", initial=self.epoch_step, leave=False, dynamic_ncols=True)
            start, seen = time.perf_counter(), 0
            side = self.batches.side(self.epoch, self.epochs)
            for i, (x, y) in enumerate(self.batches.train(self.epoch, self.epoch_step, steps, self.aug_rng, side),
                                     start=self.epoch_step):
                if self.batches.every_rank_has_images(len(y), i, self.epoch):
                    self._train_step(x, y, criterion)
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
            if on_epoch_end is not None and all_sum([float(bool(on_epoch_end(row)))], ctx)[0]:
                break
        if ctx.is_main:
            self._plot()
            if self.tb is not None:
                self.tb.close()
        return {**row, "run_dir": str(self.out), "best_error": self.best_error, "skipped_images": len(self.batches.skipped),
                "history": read_metrics(self.out) if ctx.is_main else []}

    def _start_epoch(self) -> None:
        """Training mode for the epoch (what fine-tuning holds still), and the model wrapped for it: DDP reduces the
        parameters that take gradients when it is built, so a linear probe's end builds it again."""
        cfg, ctx = self.config, self.ctx
        set_train_mode(self.model, cfg, self.epoch)
        alone = head_only(cfg, self.epoch)
        if alone == self.head_only:
            return
        if self.head_only is None and ctx.is_main and (said := describe_fine_tuning(cfg)):
            print(f"resnets train: {said}", flush=True)
        self.head_only, self.net = alone, self.model
        if ctx.enabled:
            ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if cfg.compile:
            self.net = torch.compile(self.net)

    def _finished_already(self) -> dict[str, Any]:
        """A resumed run that has trained its whole length: nothing to do; its last metrics, and what to do instead."""
        if self.ctx.is_main:
            length = self._length(self.total_steps)
            option = "max_steps" if self.config.max_steps else "epochs"
            print(f"resnets train: the run in {self.out} has finished its {length}; nothing to train. To train it "
                  f"further, resume it with a longer run ({option}=N, --{option.replace('_', '-')} N, N above "
                  f"{length.split()[0]}): the {self.config.schedule} learning-rate schedule is then recomputed for "
                  "N from where the run is, as timm's --resume does", flush=True)
        history = read_metrics(self.out) if self.ctx.is_main else []
        return {**(history[-1] if history else {}), "run_dir": str(self.out), "best_error": self.best_error,
                "skipped_images": 0, "history": history}

    def _train_step(self, x: torch.Tensor, y: torch.Tensor, criterion: nn.Module) -> None:
        cfg = self.config
        lr = lr_at(self.step, self.total_steps, cfg, self.warming_up, self.steps_per_epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        dtype = AUTOCAST_DTYPE[cfg.precision]
        with torch.autocast(self.ctx.device.type, dtype=dtype, enabled=dtype is not None):
            logits = self.net(x)
        loss = criterion(logits.float(), y)
        if self.teacher is not None:
            teacher = self.teacher.logits(x, self.data.preprocessing)
            loss = distilled(loss, logits, teacher, cfg.distill_alpha, cfg.distill_temperature)
        correct = (logits.argmax(1) == (y.argmax(1) if y.ndim == 2 else y)).sum()  # mixed: the larger share
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
        if cfg.clip_grad_norm is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            update_ema(self.ema, self.model, self.epoch_step, cfg.model_ema_steps, self.epoch < cfg.lr_warmup_epochs)
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
            raise BadInput(f"epoch {self.epoch + 1}: no readable training image in {self.config.data}")
        eval_loss, eval_error, eval_ece = self.evaluate(self.ema.module if self.ema is not None else None)
        trained = (dict(zip(("raw_eval_loss", "raw_eval_error", "raw_eval_ece"), self.evaluate()))
                   if self.ema is not None else {})
        self.epoch, self.epoch_step, self.meters = self.epoch + 1, 0, [0.0, 0.0, 0.0]
        row = {
            "epoch": self.epoch, "step": self.step,
            "lr": lr_at(self.step - 1, self.total_steps, self.config, self.warming_up, self.steps_per_epoch),
            "train_loss": loss_sum / count, "train_error": 1 - correct / count,
            "eval_loss": eval_loss, "eval_error": eval_error, "eval_ece": eval_ece, "eval_split": self.data.eval_split,
            "epoch_time_s": round(elapsed, 2), "images_per_s": round(seen / max(elapsed, 1e-9), 1),
            "wall_s": self._wall(), **trained,
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
    def evaluate(self, model: nn.Module | None = None) -> tuple[float, float, float]:
        """Loss (the NLL: plain cross-entropy), error and ECE (``resnets.calibration``'s 15 bins) of ``model``
        (default: the trained one) on the evaluation split, each rank taking every world_size-th image.

        Always in fp32, whatever the training precision: the recorded error is then exactly what
        ``resnets eval`` of the saved weights measures.
        """
        model = model if model is not None else unwrap(self.model)
        model.eval()
        loss_sum = correct = count = 0.0
        bins = torch.zeros(3, N_BINS, dtype=torch.float64)
        for x, y in self.batches.eval():
            count += len(y)
            logits = model(self.batches.normalize(x)).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
            if len(y):
                bins += reliability_sums(logits.softmax(1), y)
        # every rank gets here once, even one with no readable image (its streamed batches are all skipped)
        loss_sum, correct, count, *flat = all_sum([loss_sum, correct, count, *bins.flatten().tolist()], self.ctx)
        if not count:
            raise BadInput(f"no readable image in the {self.data.eval_split} split")
        return loss_sum / count, 1 - correct / count, Reliability.from_sums(torch.tensor(flat).view(3, -1)).ece

    def _plot(self) -> None:
        from .plots import plot_run

        try:
            plot_run(self.out)
        except ImportError:
            print("resnets train: matplotlib is not installed, no plot drawn (pip install 'resnets[plot]')")
