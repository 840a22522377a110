"""The network a run trains: fresh, or built around its starting weights (read once) with a classifier for the
data's classes; and what fine-tuning holds still: the backbone and its BatchNorm statistics under
``freeze="backbone"`` and during a linear probe (``lp_epochs``), the backbone's slower learning rate
(``backbone_lr_scale``)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from torch import nn

from ..errors import BadInput
from ..factory import create_model
from .config import TrainConfig

#: The classifier's parameter names start so (``ResNet.fc``); the rest is the backbone.
HEAD = "fc."


def classifier_size(config: TrainConfig, classes: int) -> int:
    """The classifier's outputs for data of ``classes`` classes: ``config.num_classes`` (room for more), or one each."""
    if config.num_classes is not None and config.num_classes < classes:
        raise BadInput(f"num_classes={config.num_classes} is fewer than the {classes} classes of {config.data}: "
                       "leave it out (one output per class) or give at least as many")
    return config.num_classes or classes


def load_weights(config: TrainConfig, num_classes: int, classes: Sequence[str] = ()) -> nn.Module | None:
    """The network of ``config.weights`` with them loaded and a classifier of ``num_classes``, or None without
    weights. The weights' own classifier is kept only where it scores these ``classes`` (the data's, in order): the
    same count (``create_model``'s rule) and, where the weights name their classes, the same names; otherwise a
    fresh one, said in one line (five new classes must not start as five old ones). Its ``pretrained_cfg`` says
    what the weights are (network, preprocessing). The one place a run reads its starting weights."""
    if not config.weights:
        return None
    model = create_model(config.model, weights=config.weights, **{**config.model_kwargs, "num_classes": num_classes})
    own = getattr(model, "pretrained_cfg", None) and model.pretrained_cfg.classes
    if own and classes and len(own) == num_classes and tuple(own[:len(classes)]) != tuple(classes):
        warnings.warn(f"{config.weights} scores other classes ({_names(own)}) than {config.data} "
                      f"({_names(classes)}): its classifier is replaced by a fresh one", stacklevel=2)
        model.reset_classifier(num_classes)
    return model


def _names(classes: Sequence[str]) -> str:
    return ", ".join(classes[:4]) + (f" and {len(classes) - 4} more" if len(classes) > 4 else "")


def build_model(config: TrainConfig, num_classes: int, pretrained: nn.Module | None = None,
                classes: Sequence[str] = ()) -> nn.Module:
    """The model of ``config`` for ``num_classes`` (the data's ``classes``): ``pretrained`` (default:
    :func:`load_weights`), or fresh without weights; with ``freeze="backbone"`` only the classifier trains."""
    model = pretrained if pretrained is not None else load_weights(config, num_classes, classes)
    if model is None:
        model = create_model(config.model, **{**config.model_kwargs, "num_classes": num_classes})
    if config.freeze == "backbone":
        for name, p in model.named_parameters():
            p.requires_grad = name.startswith(HEAD)
    return model


def head_only(config: TrainConfig, epoch: int) -> bool:
    """Whether epoch ``epoch`` (0-based) trains the classifier alone: throughout with ``freeze="backbone"``, for
    the first ``lp_epochs`` of a linear probe then fine-tune."""
    return config.freeze == "backbone" or epoch < config.lp_epochs


def set_train_mode(model: nn.Module, config: TrainConfig, epoch: int) -> None:
    """Training mode for epoch ``epoch``, except what is held still: BatchNorm layers stay in eval mode (their
    running statistics frozen) under ``freeze`` and while the classifier trains alone, whose backbone then takes no
    gradient either (Keras' frozen-BatchNorm trap: a frozen backbone whose statistics still move)."""
    model.train()
    alone = head_only(config, epoch)
    if config.lp_epochs:  # the probe's frozen backbone trains again after it
        for name, p in model.named_parameters():
            p.requires_grad = name.startswith(HEAD) or not alone
    if config.freeze != "none" or alone:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def with_backbone_lr(groups: list[dict[str, Any]], model: nn.Module, scale: float) -> list[dict[str, Any]]:
    """``groups`` (optimizer parameter groups) split into classifier and backbone parts, the backbone's with
    ``lr_scale`` = ``scale``: the trainer sets each group's lr to the schedule's times its ``lr_scale``."""
    if scale == 1.0:
        return groups
    head = {id(p) for name, p in model.named_parameters() if name.startswith(HEAD)}
    split = []
    for group in groups:
        for part, scaled in (([p for p in group["params"] if id(p) in head], 1.0),
                             ([p for p in group["params"] if id(p) not in head], scale)):
            if part:
                split.append({**group, "params": part, "lr_scale": scaled})
    return split


def describe_fine_tuning(config: TrainConfig) -> str:
    """What a fine-tuning run holds still, in a line for the log ("" when it trains everything alike)."""
    said = []
    if config.freeze == "backbone":
        said.append("freeze='backbone': only the classifier trains; the backbone's weights and its BatchNorm "
                    "statistics (running mean and variance) stay as loaded")
    elif config.freeze == "bn":
        said.append("freeze='bn': BatchNorm statistics stay as they start")
    if config.lp_epochs:
        epochs = f"{config.lp_epochs} epoch{'s' if config.lp_epochs != 1 else ''}"
        said.append(f"linear probe for the first {epochs} (the classifier alone, the backbone's "
                    "weights and BatchNorm statistics frozen), then every layer trains")
    if config.backbone_lr_scale != 1.0:
        said.append(f"the backbone learns at {config.backbone_lr_scale:g} x the classifier's learning rate")
    return "; ".join(said)
