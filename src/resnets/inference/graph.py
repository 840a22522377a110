"""The network captured as one ``torch.export`` graph for every batch size: what int8 quantization and the
``.pt2`` export both start from."""

from __future__ import annotations

import torch
from torch import nn


def export_dynamic_batch(model: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """``torch.export`` with a dynamic batch dimension, so one graph serves every batch size."""
    if len(example) < 2:  # export would specialise a batch of 1 into the graph
        example = example[:1].expand(2, *example.shape[1:]).contiguous(memory_format=torch.channels_last)
    batch = torch.export.Dim("batch", min=1, max=4096)
    return torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
