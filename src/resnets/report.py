"""The evaluation report ``resnets eval --report DIR`` writes: is this model good enough to ship?

Per-class precision, recall, F1 and support with macro and weighted averages (as scikit-learn's
``classification_report``), the confusion matrix, calibration (NLL, Brier, ECE and MCE over 15 bins), and three
pictures: the row-normalised confusion matrix, the reliability diagram and a contact sheet of the most
confidently wrong images. ``report.json`` holds every number; ``report.html`` is one static page that opens from
disk with no network (its pictures inline, and beside it as PNG files).
"""

from __future__ import annotations

import base64
import html
import importlib.util
import io
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_path
from .calibration import N_BINS, Reliability, brier, nll, reliability
from .choices import REPORT_WRONG as WRONG
from .data.images import ImageLoadError
from .data.source import ImageRef, load_image
from .errors import BadInput, MissingExtra

PICTURES = {"confusion_matrix": "confusion_matrix.png", "reliability": "reliability.png",
            "confidently_wrong": "confidently_wrong.png"}
_THUMB = 96  # contact-sheet thumbnails' longer side, pixels


def check_plot_extra() -> None:
    """Refuse a report before any image is evaluated when matplotlib (the ``plot`` extra) is missing."""
    if importlib.util.find_spec("matplotlib") is None:
        raise MissingExtra("report= draws its pictures with matplotlib: pip install 'resnets[plot]'")


def confusion_matrix(predicted: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    """``(classes, classes)`` counts: row = true class, column = predicted class (scikit-learn's layout)."""
    flat = labels.long() * classes + predicted.long()
    return torch.bincount(flat, minlength=classes * classes).reshape(classes, classes)


def class_scores(confusion: torch.Tensor) -> dict[str, Any]:
    """Per-class precision, recall, F1 and support from a confusion matrix, with their macro (unweighted) and
    support-weighted averages; a ratio of zero over zero counts 0, as scikit-learn's default."""
    cm = confusion.double()
    right, support, predicted = cm.diagonal(), cm.sum(1), cm.sum(0)

    def ratio(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        some = b > 0
        return torch.where(some, a / torch.where(some, b, torch.ones_like(b)), torch.zeros_like(a))

    precision, recall = ratio(right, predicted), ratio(right, support)
    f1 = ratio(2 * precision * recall, precision + recall)
    per_class = {"precision": precision, "recall": recall, "f1-score": f1}  # scikit-learn's names
    weights = support / support.sum()
    return {
        "per_class": [{**{k: float(v[i]) for k, v in per_class.items()}, "support": int(support[i])}
                      for i in range(len(cm))],
        "macro_avg": {k: float(v.mean()) for k, v in per_class.items()},
        "weighted_avg": {k: float((v * weights).sum()) for k, v in per_class.items()},
    }


@dataclass
class Evaluated:
    """What a report is made of: the probabilities of every image evaluated (over the scored classes only),
    its label among them, the classes' names and the images themselves (for the contact sheet)."""

    probabilities: torch.Tensor  # (N, K) float
    labels: torch.Tensor  # (N,) in 0..K-1
    class_names: Sequence[str]  # K
    images: Sequence[ImageRef]  # N


def report_numbers(ev: Evaluated, wrong: int = WRONG) -> dict[str, Any]:
    """Every number of the report (JSON-ready): calibration, per-class scores, the confusion matrix and the
    ``wrong`` most confidently wrong images."""
    probs, labels = ev.probabilities, ev.labels
    confidence, predicted = probs.max(dim=1)
    rel = reliability(probs, labels)
    cm = confusion_matrix(predicted, labels, probs.shape[1])
    mistakes = torch.nonzero(predicted != labels).flatten()
    worst = mistakes[confidence[mistakes].argsort(descending=True, stable=True)][:wrong]
    names = list(ev.class_names)
    scores = class_scores(cm)
    scores["per_class"] = [{"class": name, **row} for name, row in zip(names, scores["per_class"])]
    return {
        "nll": nll(probs, labels), "brier": brier(probs, labels), "ece": rel.ece, "mce": rel.mce,
        "reliability": _bins(rel), **scores,
        "confusion_matrix": {"classes": names, "rows_true_columns_predicted": cm.tolist()},
        "most_confidently_wrong": [{"image": str(ev.images[i]), "true": names[int(labels[i])],
                                    "predicted": names[int(predicted[i])], "confidence": float(confidence[i])}
                                   for i in worst.tolist()],
    }


def _bins(rel: Reliability) -> dict[str, Any]:
    return {"edges": rel.edges.tolist(), "count": rel.counts.tolist(), "confidence": rel.confidence.tolist(),
            "accuracy": rel.accuracy.tolist()}


def _reliability(bins: dict[str, Any]) -> Reliability:
    return Reliability(torch.tensor(bins["edges"]), torch.tensor(bins["count"]), torch.tensor(bins["confidence"]),
                       torch.tensor(bins["accuracy"]))


def write_report(out: str | os.PathLike, ev: Evaluated, summary: dict[str, Any], wrong: int = WRONG) -> Path:
    """Write ``report.json``, the PNG pictures and ``report.html`` into the folder ``out``; returns the HTML's
    path. ``summary``: what was evaluated and its headline scores (model, weights, data, top-1, top-5, ...),
    written first in both files."""
    check_plot_extra()
    if wrong < 0:
        raise BadInput(f"wrong must be >= 0, got {wrong}")
    out = Path(out)
    numbers = report_numbers(ev, wrong)
    pictures = {
        "confusion_matrix": _confusion_png(numbers["confusion_matrix"]),
        "reliability": _reliability_png(_reliability(numbers["reliability"])),
    }
    if numbers["most_confidently_wrong"]:
        pictures["confidently_wrong"] = _contact_sheet_png(ev, numbers["most_confidently_wrong"])
    for key, png in pictures.items():
        with atomic_path(out / PICTURES[key]) as tmp:
            tmp.write_bytes(png)
    report = {**summary, **numbers, "pictures": {k: PICTURES[k] for k in pictures}}
    with atomic_path(out / "report.json") as tmp:
        tmp.write_text(_json(report) + "\n")
    with atomic_path(out / "report.html") as tmp:
        tmp.write_text(_html(report, pictures), encoding="utf-8")
    return out / "report.html"


def _json(report: dict[str, Any]) -> str:
    """Indented JSON with each list of numbers on one line (a 1,000-class confusion matrix: 1,000 lines, not a
    million)."""
    text = json.dumps(report, indent=1)
    return re.sub(r"\[\s+([-+.\deE]+(?:,\s+[-+.\deE]+)*)\s+\]",
                  lambda m: "[" + ", ".join(m.group(1).replace(",", " ").split()) + "]", text)


# --- pictures --------------------------------------------------------------------------------------------


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _figure(width: float, height: float):
    """A matplotlib figure of its own (no pyplot: nothing global changes in the caller's matplotlib)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _confusion_png(confusion: dict[str, Any]) -> bytes:
    """The confusion matrix normalised per true class (each row sums to 1: its diagonal is the recall)."""
    names = confusion["classes"]
    k = len(names)
    cm = torch.tensor(confusion["rows_true_columns_predicted"], dtype=torch.float64)
    rows = cm / cm.sum(1, keepdim=True).clamp(min=1)
    side = min(max(4.5, 0.45 * k + 2), 14)
    fig = _figure(side + 1, side)
    ax = fig.subplots()
    image = ax.imshow(rows.numpy(), cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of the true class")
    if k <= 40:
        ax.set_xticks(range(k), names, rotation=90)
        ax.set_yticks(range(k), names)
    if k <= 15:
        for i in range(k):
            for j in range(k):
                if rows[i, j] >= 0.005:
                    ax.text(j, i, f"{rows[i, j]:.2f}", ha="center", va="center", fontsize=8,
                            color="white" if rows[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"confusion matrix, normalised per true class ({int(cm.sum())} images)")
    return _png(fig)


def _reliability_png(rel: Reliability) -> bytes:
    """Accuracy per confidence bin against the diagonal (the gap shaded), and how many predictions each bin holds."""
    fig = _figure(5.5, 6.5)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    lo, width = rel.edges[:-1].numpy(), 1 / len(rel.counts)
    full = (rel.counts > 0).numpy()
    top.bar(lo[full], rel.accuracy.numpy()[full], width=width, align="edge", color="tab:blue", edgecolor="black",
            label="accuracy")
    gap_lo = torch.minimum(rel.accuracy, rel.confidence).numpy()[full]
    top.bar(lo[full], rel.gaps.numpy()[full], bottom=gap_lo, width=width, align="edge", facecolor="none",
            edgecolor="tab:red", hatch="///", label="gap to the bin's mean confidence")
    top.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.legend(loc="upper left")
    top.set_title(f"reliability: ECE {100 * rel.ece:.2f}%, MCE {100 * rel.mce:.2f}% "
                  f"({len(rel.counts)} bins)")
    bottom.bar(lo, rel.counts.numpy(), width=width, align="edge", color="gray", edgecolor="black")
    if int(rel.counts.max()) > 100 * max(1, int(rel.counts[rel.counts > 0].min())):
        bottom.set_yscale("log")
    bottom.set_xlabel("confidence (top-1 probability)")
    bottom.set_ylabel("images")
    return _png(fig)


def _contact_sheet_png(ev: Evaluated, worst: list[dict[str, Any]]) -> bytes:
    """The most confidently wrong images, most confident first, each titled with its true and predicted class."""
    import numpy as np

    columns = min(len(worst), 4 if len(worst) <= 16 else 6)
    rows = math.ceil(len(worst) / columns)
    fig = _figure(2.3 * columns, 2.6 * rows)
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    refs = {str(ref): ref for ref in ev.images}
    for ax, item in zip(axes, worst):
        try:
            image = load_image(refs[item["image"]])
            image.thumbnail((_THUMB, _THUMB))
            ax.imshow(np.asarray(image), interpolation="nearest")
        except ImageLoadError:  # gone or changed since it was evaluated: the labels still say what happened
            ax.text(0.5, 0.5, "unreadable", ha="center", va="center")
        ax.set_title(f"true: {item['true']}\npred: {item['predicted']} ({100 * item['confidence']:.1f}%)",
                     fontsize=8)
    for ax in axes:
        ax.axis("off")
    return _png(fig)


# --- the page ----------------------------------------------------------------------------------------------

_STYLE = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{padding:2px 10px;border-bottom:1px solid #ddd;text-align:right}
td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #ccc;margin:.3em 0}
.note{background:#fff6d5;padding:.5em 1em;border-left:4px solid #e0b000}figure{margin:0 0 1.5em}"""


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _rows(items: list[tuple[str, str]]) -> str:
    return "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in items)


def _html(report: dict[str, Any], pictures: dict[str, bytes]) -> str:
    """One static page: the headline numbers, the pictures (inline data URIs), the per-class table."""
    e = html.escape
    about = [(k, str(v)) for k, v in report.items() if k in ("model", "weights", "data", "images", "tta",
                                                               "temperature", "classes")]
    about.append(("unreadable", str(len(report.get("errors", ())))))
    headline = [("top-1", f"{report['top1']:.2f}%"),
                *([("top-5", f"{report['top5']:.2f}%")] if report["top5"] is not None else []),
                ("NLL", f"{report['nll']:.4f}"), ("Brier", f"{report['brier']:.4f}"),
                (f"ECE ({N_BINS} bins)", _pct(report["ece"])), ("MCE", _pct(report["mce"]))]
    note = f"<p class=note>{e(report['subset'])}</p>" if report.get("subset") else ""
    figures = "".join(
        f"<figure><img alt='{e(key.replace('_', ' '))}' src='data:image/png;base64,"
        f"{base64.b64encode(png).decode()}'><figcaption>{e(PICTURES[key])}</figcaption></figure>"
        for key, png in pictures.items())
    head = "<tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>"

    def line(name: str, row: dict[str, Any], support: int) -> str:
        return (f"<tr><td>{e(name)}</td><td>{row['precision']:.4f}</td><td>{row['recall']:.4f}</td>"
                f"<td>{row['f1-score']:.4f}</td><td>{support}</td></tr>")

    total = sum(r["support"] for r in report["per_class"])
    table = (head + "".join(line(r["class"], r, r["support"]) for r in report["per_class"])
             + line("macro avg", report["macro_avg"], total) + line("weighted avg", report["weighted_avg"], total))
    wrong = "".join(f"<tr><td>{e(w['image'])}</td><td>{e(w['true'])}</td><td>{e(w['predicted'])}</td>"
                    f"<td>{_pct(w['confidence'])}</td></tr>" for w in report["most_confidently_wrong"])
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>resnets eval report: {e(str(report.get('model', '')))}</title>
<style>{_STYLE}</style></head><body>
<h1>Evaluation report</h1>
<table>{_rows(about)}</table>{note}
<h2>Scores</h2><table>{_rows(headline)}</table>
<h2>Pictures</h2>{figures}
<h2>Per class</h2><table>{table}</table>
<h2>Most confidently wrong</h2>
<table><tr><th>image</th><th>true</th><th>predicted</th><th>confidence</th></tr>{wrong}</table>
<p>Every number is in report.json beside this page.</p>
</body></html>
"""
