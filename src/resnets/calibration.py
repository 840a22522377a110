"""Does a model's confidence mean what it says? Calibration measures, and temperature scaling to fix it.

A network trained with plain cross-entropy is over-confident (Guo et al. 2017, "On Calibration of Modern Neural
Networks"): among images it gives 90%, fewer than 90% are right. The measures here take class probabilities
``(N, C)`` and integer labels ``(N,)`` as tensors, so evaluation, training and tests share them; the
temperature ``T`` that fixes it is fitted on held-out logits and divides every later logit before the softmax.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import BadInput, JobFailed

#: Equal-width confidence bins of ECE, MCE and the reliability diagram (Guo et al.'s 15).
N_BINS = 15
#: Where a probability that underflowed to 0 is clamped for ``-log p`` (the smallest normal float32: -log = 87.3).
_TINY = torch.finfo(torch.float32).tiny
#: A fitted temperature outside these is a degenerate fit (labels unrelated to the logits).
MIN_TEMPERATURE, MAX_TEMPERATURE = 1e-2, 1e2


def scaled_softmax(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Class probabilities of a temperature-scaled classifier: ``softmax(logits / temperature)`` over dim 1 (at
    ``T = 1`` the plain softmax, with no division)."""
    return (logits / temperature if temperature != 1.0 else logits).softmax(dim=1)


def _check(probs: torch.Tensor, labels: torch.Tensor) -> None:
    if probs.ndim != 2 or labels.ndim != 1 or len(probs) != len(labels):
        raise BadInput(f"probs must be (N, C) and labels (N,), got shapes {tuple(probs.shape)} and "
                         f"{tuple(labels.shape)}")
    if not len(labels):
        raise BadInput("no samples: calibration needs at least one labelled prediction")


@dataclass(frozen=True)
class Reliability:
    """The top-label reliability diagram: per confidence bin ``(edges[i], edges[i+1]]`` (the first also holds 0),
    how many predictions fell in it, their mean confidence and the fraction of them that were right (0 where
    empty)."""

    edges: torch.Tensor  # (n_bins + 1,) float64, 0 to 1
    counts: torch.Tensor  # (n_bins,) int64
    confidence: torch.Tensor  # (n_bins,) float64
    accuracy: torch.Tensor  # (n_bins,) float64

    @classmethod
    def from_sums(cls, sums: torch.Tensor) -> Reliability:
        """The diagram of :func:`reliability_sums` added up over batches (and ranks)."""
        counts, confidence, right = sums.double()
        filled = counts.clamp(min=1)
        return cls(torch.linspace(0, 1, len(counts) + 1, dtype=torch.float64), counts.round().long(),
                   confidence / filled, right / filled)

    @property
    def gaps(self) -> torch.Tensor:
        """``|accuracy - confidence|`` per bin (0 where empty)."""
        return (self.accuracy - self.confidence).abs()

    @property
    def ece(self) -> float:
        """Expected calibration error: the bins' gaps weighted by their share of the predictions (L1)."""
        return float((self.gaps * self.counts).sum() / self.counts.sum())

    @property
    def mce(self) -> float:
        """Maximum calibration error: the largest gap of a non-empty bin."""
        return float(self.gaps[self.counts > 0].max())


def reliability(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = N_BINS) -> Reliability:
    """Bin the top-1 confidences of ``probs`` into ``n_bins`` equal-width bins (right-closed, as Guo et al. and
    scikit-learn's ``calibration_curve``; torchmetrics agrees except for a confidence exactly on an edge)."""
    return Reliability.from_sums(reliability_sums(probs, labels, n_bins))


def reliability_sums(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = N_BINS) -> torch.Tensor:
    """``(3, n_bins)`` float64: per bin the number of predictions, the sum of their confidences and the number
    right. Sums of batches (and of ranks) add up to the whole set's, so training measures ECE batch by batch."""
    _check(probs, labels)
    if n_bins < 1:
        raise BadInput(f"n_bins must be >= 1, got {n_bins}")
    confidence, predicted = probs.max(dim=1)
    confidence = confidence.double()
    right = (predicted == labels.to(predicted.device)).double()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    index = torch.bucketize(confidence.cpu(), edges[1:-1], right=False)
    return torch.stack([torch.bincount(index, minlength=n_bins).double(),
                        torch.bincount(index, weights=confidence.cpu(), minlength=n_bins),
                        torch.bincount(index, weights=right.cpu(), minlength=n_bins)])


def ece(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = N_BINS) -> float:
    """Expected calibration error (L1, ``n_bins`` equal-width bins) of top-1 confidences: 0 is calibrated."""
    return reliability(probs, labels, n_bins).ece


def mce(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = N_BINS) -> float:
    """Maximum calibration error: the worst bin's ``|accuracy - confidence|``."""
    return reliability(probs, labels, n_bins).mce


def nll(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean negative log-likelihood of the true class (cross-entropy); a probability that underflowed to 0
    counts as the smallest float32, not as infinity."""
    _check(probs, labels)
    p = probs.gather(1, labels.to(probs.device)[:, None].long())[:, 0].double()
    return float(-p.clamp(min=_TINY).log().mean())


def brier(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Multi-class Brier score: the mean over samples of ``sum_c (p_c - [c == label])^2`` (0 best, 2 worst), as
    Brier (1950) and scikit-learn's ``brier_score_loss`` define it."""
    _check(probs, labels)
    onehot = F.one_hot(labels.to(probs.device).long(), probs.shape[1]).double()
    return float(((probs.double() - onehot) ** 2).sum(dim=1).mean())


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 100) -> float:
    """The temperature ``T`` minimising the NLL of ``softmax(logits / T)`` on held-out ``(logits, labels)``.

    L-BFGS on ``log T`` (so ``T`` stays positive) with a strong-Wolfe line search, in float64; the NLL is convex
    in ``1/T``, so its one minimum is found from ``T = 1``.
    """
    _check(logits, labels)
    if not torch.isfinite(logits).all():
        raise BadInput("logits hold NaN or infinite values: no temperature fits them")
    z, y = logits.detach().double(), labels.to(logits.device).long()
    if bool((z.argmax(1) == y).all()):
        raise BadInput("every held-out prediction is right, so the NLL falls without end as T -> 0: hold out "
                         "more images (some the model gets wrong)")
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, tolerance_grad=1e-10, tolerance_change=1e-12,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    t = float(log_t.detach().exp())
    if not (MIN_TEMPERATURE <= t <= MAX_TEMPERATURE):  # NaN included
        raise JobFailed(f"the temperature fit ran off to T = {t:.3g}: are these the labels of these logits?")
    return t
