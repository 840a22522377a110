"""Class activation maps: where in the image a ResNet found the evidence for a class.

A ResNet with global average pooling is the network class activation mapping was made for: its
logit for class c is the mean over positions of ``w_c . A(x, y)`` (plus a bias), so ``w_c . A`` is a
map of the class score. Three methods, all computed from a stage's feature map ``A`` (``layer``):

* ``"cam"`` (Zhou et al., CVPR 2016): the classifier's weights times the last feature map; no gradients.
* ``"gradcam"`` (Selvaraju et al., ICCV 2017): channel weights are the spatial mean of the gradient of the
  class logit with respect to ``A``; any stage. At the last stage of a GAP network this is CAM / (h*w).
* ``"gradcam++"`` (Chattopadhay et al., WACV 2018): gradients weighted per position (their eq. 19, with
  the exponential of the logit), better with several instances of a class.

Gradients are taken without hooks and without touching the weights: the stages up to ``layer`` run
under ``no_grad``, gradient recording is switched on for the feature map alone (also inside the caller's
``no_grad``/``inference_mode``), and ``torch.autograd.grad`` returns its gradient, so frozen weights
work, no ``.grad`` is written and nothing is left behind on the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .choices import METHODS
from .errors import BadInput
from .pipeline import logit_probabilities


@dataclass
class Explanation:
    """What :func:`explain` found for a batch of N images.

    ``maps``: (N, H, W) float32 in [0, 1] at the input's resolution (ReLU, bilinear upsampling, then each
    map scaled to a maximum of 1; a map with no positive evidence is all zeros). ``raw_maps``: (N, h, w)
    at the stage's resolution before any of that, in logit units (for CAM, ``raw_maps.mean((1, 2)) +
    fc.bias[c]`` is the logit). ``classes``: (N,) the class explained; ``probabilities``: (N,) the
    model's probability for it. All on the model's device.
    """

    maps: torch.Tensor
    raw_maps: torch.Tensor
    classes: torch.Tensor
    probabilities: torch.Tensor
    method: str
    layer: int


def _check_model(model: nn.Module) -> None:
    needed = ("stage_names", "forward_intermediates", "forward_after", "forward_head", "fc", "num_classes")
    missing = [name for name in needed if not hasattr(model, name)]
    if missing:
        raise TypeError(f"explain needs a resnets ResNet (eager, fp32/bf16), got {type(model).__name__} without "
                        f"{', '.join(missing)}; explain the model from resnets.create_model, not an optimized copy")
    if not model.num_classes:
        raise BadInput("explain needs a classifier: this model has num_classes=0 (include_top=False); "
                         "build it with its classification head")


def _targets(target: int | Sequence[int] | torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor:
    """Class index per image: the top class when ``target`` is None, one index for all, or one per image."""
    n, num_classes = logits.shape
    if target is None:
        return logits.argmax(1)
    t = torch.as_tensor(target, device=logits.device).long().flatten()
    if t.numel() == 1:
        t = t.expand(n)
    if t.numel() != n:
        raise BadInput(f"target has {t.numel()} class indices for a batch of {n} images")
    bad = t[(t < 0) | (t >= num_classes)]
    if bad.numel():
        raise BadInput(f"target class {bad[0].item()} is out of range for a model with {num_classes} classes")
    return t


def _normalise(raw: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """ReLU, upsample to ``size`` (bilinear), scale each map to [0, 1] (max 1 unless all zero)."""
    up = F.interpolate(raw.clamp(min=0)[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    up = up - up.amin((1, 2), keepdim=True)
    return up / up.amax((1, 2), keepdim=True).clamp(min=1e-7)


def _logits(model: nn.Module, fmap: torch.Tensor) -> torch.Tensor:
    """Class logits from the last feature map: the head without its activation (Keras models end in softmax)."""
    return model.fc(model.forward_head(fmap, pre_logits=True))


def _run(model: nn.Module, x: torch.Tensor, target, method: str, layer: int) -> Explanation:
    with torch.no_grad():
        fmap = model.forward_intermediates(x, [layer])[0]
    return explain_map(model, fmap, tuple(x.shape[-2:]), target, method, layer)


def explain_map(model: nn.Module, fmap: torch.Tensor, size: tuple[int, int],
                target: int | Sequence[int] | torch.Tensor | None, method: str, layer: int) -> Explanation:
    """:func:`explain` from stage ``layer``'s feature map ``fmap`` of images of ``size``, computed by any module
    (an optimized copy of the stages, as ``resnets serve`` runs them): the rest of ``model`` runs here, in its own
    precision, with gradients for the map alone. Arguments are not checked again: :func:`explain` checks them."""
    with torch.inference_mode(False):  # also inside the caller's inference_mode: a graph from the map on
        return _from_map(model, fmap, size, target, method, layer)


def _from_map(model: nn.Module, fmap: torch.Tensor, size: tuple[int, int],
              target: int | Sequence[int] | torch.Tensor | None, method: str, layer: int) -> Explanation:
    fmap = fmap.detach().to(next(model.parameters()).dtype)
    if fmap.is_inference():  # made under inference_mode: copy into an ordinary tensor
        fmap = fmap.clone()
    fmap.requires_grad_(method != "cam")
    with torch.set_grad_enabled(method != "cam"):
        logits = _logits(model, model.forward_after(fmap, layer)).float()
    classes = _targets(target, logits.detach())
    probabilities = logit_probabilities(model, logits.detach()).gather(1, classes[:, None])[:, 0]
    a = fmap.detach().float()
    if method == "cam":
        weights = model.fc.weight.detach().float()[classes]  # (N, C)
        raw = torch.einsum("nc,nchw->nhw", weights, a)
    else:
        (grads,) = torch.autograd.grad(logits.gather(1, classes[:, None]).sum(), fmap)
        g = grads.float()
        if method == "gradcam":
            weights = g.mean((2, 3))
        else:  # gradcam++: alpha = g^2 / (2 g^2 + sum(A) g^3) (0 where g is 0), weights = sum(alpha * relu(g))
            g2 = g * g
            alpha = g2 / (2 * g2 + a.sum((2, 3), keepdim=True) * g2 * g + 1e-6)
            weights = (alpha * g.clamp(min=0)).sum((2, 3))
        raw = torch.einsum("nc,nchw->nhw", weights, a)
    maps = _normalise(raw, size)
    return Explanation(maps, raw, classes, probabilities, method, layer)


def checked_layer(model: nn.Module, method: str, layer: int | None) -> int:
    """The stage (1-based) that :func:`explain` explains with ``method`` at ``layer`` (None: the last); a BadInput
    naming the problem if ``model``, ``method`` or ``layer`` cannot be explained."""
    _check_model(model)
    if method not in METHODS:
        raise BadInput(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    last = len(model.stage_names)
    layer = last if layer is None else int(layer)
    if not 1 <= layer <= last:
        raise BadInput(f"layer must lie in 1..{last} (the model's stages), got {layer}")
    if method == "cam" and (layer != last or model.global_pool != "avg"):
        raise BadInput("CAM is defined on the last stage of a network with global average pooling "
                       f"(here layer={layer} of {last}, pooling {model.global_pool!r}); use method='gradcam'")
    return layer


def explain(
    model: nn.Module,
    x: torch.Tensor,
    target: int | Sequence[int] | torch.Tensor | None = None,
    method: str = "gradcam",
    layer: int | None = None,
) -> Explanation:
    """Heat maps of where ``model`` saw class ``target`` in each image of the NCHW batch ``x``.

    ``target``: None (each image's top class), one class index for all, or one per image. ``method``:
    ``"cam"``, ``"gradcam"`` or ``"gradcam++"`` (see the module docstring). ``layer``: the stage whose
    feature map is explained, 1-based (default: the last; CAM needs the last and average pooling);
    earlier stages give finer but noisier maps.

    Works for every network of the package with a classifier (ImageNet, CIFAR, plain, Keras-style;
    any weights), on any device (``x`` is moved to the model's), inside ``no_grad``/``inference_mode``
    and with frozen weights: only the feature map gets ``requires_grad``. The model runs in eval mode
    (BatchNorm running statistics, no dropout) and is left exactly as found: each module's train/eval
    flag restored, weights, ``requires_grad`` and ``.grad`` untouched, no hooks registered.
    """
    layer = checked_layer(model, method, layer)
    if x.ndim != 4:
        raise BadInput(f"expected an NCHW batch (4 dims), got shape {tuple(x.shape)}")
    param = next(model.parameters())
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.inference_mode(False):
            batch = x.to(param.device, param.dtype)
            if batch.is_inference():  # made under inference_mode: copy into an ordinary tensor
                batch = batch.clone()
            return _run(model, batch, target, method, layer)
    finally:
        for m, training in modes.items():
            m.training = training
