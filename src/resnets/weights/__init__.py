"""Pretrained weights: loading checkpoints into models."""

from .loading import create_with_weights, load_state_dict

__all__ = ["create_with_weights", "load_state_dict"]
