"""The network a run trains: fresh, or built around its starting weights (read once), adapted to the data's
classes, with what ``freeze`` holds still."""

from __future__ import annotations

from torch import nn

from ..factory import create_model
from .config import TrainConfig


def load_weights(config: TrainConfig) -> nn.Module | None:
    """The network of ``config.weights`` with them loaded (its ``pretrained_cfg`` says what they are: network,
    preprocessing, classes), or None without weights. The one place a run reads its starting weights."""
    if not config.weights:
        return None
    return create_model(config.model, weights=config.weights, **config.model_kwargs)


def build_model(config: TrainConfig, num_classes: int, pretrained: nn.Module | None = None) -> nn.Module:
    """The model of ``config``: fresh, or ``pretrained`` (default: :func:`load_weights`) with a new classifier if the
    class count differs; with ``freeze="backbone"`` only the classifier trains."""
    model = pretrained if pretrained is not None else load_weights(config)
    if model is None:
        model = create_model(config.model, num_classes=num_classes, **config.model_kwargs)
    elif model.num_classes != num_classes:
        model.reset_classifier(num_classes)
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
