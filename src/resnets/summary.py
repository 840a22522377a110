"""Keras-style ``model.summary()``: layers, output shapes, parameters and multiply-adds.

Counted as Keras counts them: BatchNorm's moving mean and variance are non-trainable weights (53,120 in
ResNet-50), so "Total params" is ``parameters()`` plus those statistics; ``Summary.total_params`` stays
PyTorch's ``parameters()`` count.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .errors import BadInput


@dataclass
class SummaryRow:
    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int


@dataclass
class Summary:
    """``total_params``: PyTorch's ``parameters()`` count; ``statistics``: BatchNorm's moving mean and variance."""

    rows: list[SummaryRow] = field(default_factory=list)
    total_params: int = 0
    trainable_params: int = 0
    macs: int = 0
    input_size: tuple[int, ...] = ()
    statistics: int = 0

    @property
    def keras_total_params(self) -> int:
        """Keras' "Total params": every weight, the BatchNorm moving statistics included."""
        return self.total_params + self.statistics

    @property
    def non_trainable_params(self) -> int:
        """Keras' count: frozen parameters plus the BatchNorm moving statistics."""
        return self.keras_total_params - self.trainable_params


def _statistics(module: nn.Module) -> int:
    """BatchNorm moving mean and variance held by ``module`` and its children (Keras' non-trainable weights)."""
    return sum(m.running_mean.numel() + m.running_var.numel() for m in module.modules()
               if isinstance(m, nn.modules.batchnorm._NormBase) and m.running_mean is not None)


def _macs(module: nn.Module, out: torch.Tensor) -> int:
    """Multiply-adds of one conv or linear layer for one image."""
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return out[0].numel() * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return out[0].numel() * module.in_features
    return 0


def summarize(
    model: nn.Module,
    input_size: Sequence[int] = (3, 224, 224),
    print_fn: Callable[[str], None] | None = print,
    depth: int = 3,
) -> Summary:
    """Run one dummy image through ``model`` and tabulate modules down to ``depth`` name levels.

    Parameters (with BatchNorm's moving statistics, as Keras counts them) are counted once per module at
    the shown depth; multiply-adds are summed
    over every conv and linear layer for a single ``input_size`` image.
    """
    input_size = tuple(int(s) for s in input_size)
    if len(input_size) != 3:
        raise BadInput(f"input_size must be (C, H, W), got {input_size}")
    result = Summary(input_size=input_size)
    shown = {
        name: m
        for name, m in model.named_modules()
        if name and (name.count(".") + 1 == depth or (name.count(".") + 1 < depth and not list(m.children())))
    }
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = []

    def shape_hook(name: str):
        def hook(module, inputs, out):
            if isinstance(out, torch.Tensor):
                shapes[name] = tuple(out.shape)

        return hook

    def macs_hook(module, inputs, out):
        result.macs += _macs(module, out)

    for name, m in model.named_modules():
        if name in shown:
            hooks.append(m.register_forward_hook(shape_hook(name)))
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            hooks.append(m.register_forward_hook(macs_hook))
    param = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros((1, *input_size), device=param.device, dtype=param.dtype))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()

    for name, m in shown.items():
        if name in shapes:
            n = sum(p.numel() for p in m.parameters()) + _statistics(m)
            result.rows.append(SummaryRow(name, type(m).__name__, shapes[name], n))
    result.total_params = sum(p.numel() for p in model.parameters())
    result.trainable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    result.statistics = _statistics(model)
    if print_fn is not None:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else [tuple(o.shape) for o in out]
        print_fn(format_summary(result, type(model).__name__, shape))
    return result


def format_summary(s: Summary, title: str, output_shape: tuple[int, ...] | list[tuple[int, ...]]) -> str:
    """The Keras-style table of :func:`summarize` (a features-only model's output: one shape per map)."""
    header = ("Layer (type)", "Output Shape", "Param #")
    body = [(f"{r.name} ({r.kind})", str(r.output_shape), f"{r.params:,}") for r in s.rows]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(3)]
    line = "  ".join("{:<%d}" % w for w in widths[:2]) + "  {:>%d}" % widths[2]
    rule = "=" * (sum(widths) + 4)
    lines = [f'Model: "{title}"  input (1, {", ".join(map(str, s.input_size))}) -> output {output_shape}', rule,
             line.format(*header), rule]
    lines += [line.format(*row) for row in body]
    lines += [
        rule,
        f"Total params: {s.keras_total_params:,}",
        f"Trainable params: {s.trainable_params:,}",
        f"Non-trainable params: {s.non_trainable_params:,}"
        + (f" (BatchNorm moving mean and variance: {s.statistics:,})" if s.statistics else ""),
        f"PyTorch parameters(): {s.total_params:,}",
        f"Multiply-adds: {s.macs / 1e9:.3f} G" if s.macs >= 1e9 else f"Multiply-adds: {s.macs / 1e6:.2f} M",
        rule,
    ]
    return "\n".join(lines)
