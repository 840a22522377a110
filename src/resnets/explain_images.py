"""Class activation maps as pictures: the photo with its heat map, the class and probability written on it.

The map covers what the network saw, so the photo is cut to the same region (the weights' resize and
centre crop, mapped back to the original pixels) and shown at a viewable size whatever the input
resolution (a 32x32 CIFAR input becomes a 256-pixel panel). Colours are the jet map made with NumPy,
so no plotting library is needed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .errors import BadInput
from .atomic import atomic_path
from .classes import _id_name_pairs
from .data.images import ImageLoadError, load_img
from .explain import explain
from .pipeline import Inference
from .preprocess import Preprocessing

METHOD_NAMES = {"cam": "CAM", "gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++"}
PANEL_SIZE = 256  # pixels on the longer side of the photo in a panel
CAPTION_HEIGHT = 46
SHEET_MARGIN = 8


def jet(heat: np.ndarray) -> np.ndarray:
    """uint8 RGB colours of the jet map for values in [0, 1]: blue (0), green, yellow, red (1)."""
    h = np.clip(np.asarray(heat, dtype=np.float32), 0, 1)[..., None]
    rgb = np.clip(1.5 - np.abs(4 * h - np.array([3.0, 2.0, 1.0], dtype=np.float32)), 0, 1)
    return (rgb * 255 + 0.5).astype(np.uint8)


def view_box(size: tuple[int, int], preprocessing: Preprocessing) -> tuple[float, float, float, float]:
    """The region ``(left, top, right, bottom)`` of an image of ``size`` (width, height) that the network
    sees after ``preprocessing``'s resize (shorter side) and centre crop, in the image's own pixels."""
    width, height = size
    scale = preprocessing.resize_size / min(width, height) if preprocessing.resize_size else 1.0
    w, h = width * scale, height * scale
    cw = ch = preprocessing.crop_size
    if cw is None:
        cw, ch = w, h
    left, top = (w - cw) / 2, (h - ch) / 2
    return (left / scale, top / scale, (left + cw) / scale, (top + ch) / scale)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one fixed-size bitmap font
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> str:
    """``text``, shortened with an ellipsis to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def panel_view(photo: Image.Image, preprocessing: Preprocessing, size: int = PANEL_SIZE) -> Image.Image:
    """The part of ``photo`` the network saw, ``size`` pixels on its longer side: all a panel shows of the photo
    (the service keeps only this while a request waits, not the photo)."""
    box = view_box(photo.size, preprocessing)
    bw, bh = box[2] - box[0], box[3] - box[1]
    shown = (max(1, round(size * bw / max(bw, bh))), max(1, round(size * bh / max(bw, bh))))
    return (photo if photo.mode == "RGB" else photo.convert("RGB")).resize(shown, Image.Resampling.BICUBIC, box=box)


def explanation_panel(view: Image.Image, heat: np.ndarray, title: str, subtitle: str = "",
                      alpha: float = 0.5) -> Image.Image:
    """``view`` (a :func:`panel_view`) with ``heat`` ((H, W) in [0, 1], at the network's input resolution)
    overlaid in jet colours, and a caption bar below."""
    shown = view.size
    heat_img = Image.fromarray(np.asarray(heat, dtype=np.float32), mode="F").resize(shown, Image.Resampling.BILINEAR)
    colours = Image.fromarray(jet(np.asarray(heat_img)))
    panel = Image.new("RGB", (shown[0], shown[1] + CAPTION_HEIGHT), "white")
    panel.paste(Image.blend(view, colours, alpha), (0, 0))
    draw = ImageDraw.Draw(panel)
    big, small = _font(18), _font(12)
    draw.text((6, shown[1] + 4), _fit(draw, title, big, shown[0] - 12), fill="black", font=big)
    draw.text((6, shown[1] + 27), _fit(draw, subtitle, small, shown[0] - 12), fill=(90, 90, 90), font=small)
    return panel


def contact_sheet(panels: Sequence[Image.Image], columns: int | None = None) -> Image.Image:
    """The panels on a white grid, about square (``columns`` by default ceil(sqrt(n)))."""
    if not panels:
        raise BadInput("a contact sheet needs at least one panel")
    columns = columns or math.ceil(math.sqrt(len(panels)))
    rows = math.ceil(len(panels) / columns)
    cell_w, cell_h = max(p.width for p in panels), max(p.height for p in panels)
    sheet = Image.new("RGB", (columns * (cell_w + SHEET_MARGIN) + SHEET_MARGIN,
                              rows * (cell_h + SHEET_MARGIN) + SHEET_MARGIN), "white")
    for i, p in enumerate(panels):
        r, c = divmod(i, columns)
        sheet.paste(p, (SHEET_MARGIN + c * (cell_w + SHEET_MARGIN), SHEET_MARGIN + r * (cell_h + SHEET_MARGIN)))
    return sheet


def output_names(paths: Sequence[Path]) -> list[str]:
    """One PNG name per input, its stem; later inputs with a stem already taken get ``-2``, ``-3``..."""
    taken: set[str] = set()
    names = []
    for p in paths:
        stem, n = p.stem, 1
        while (stem if n == 1 else f"{stem}-{n}").lower() in taken:
            n += 1
        name = stem if n == 1 else f"{stem}-{n}"
        taken.add(name.lower())
        names.append(name + ".png")
    return names


@dataclass
class ExplainedImage:
    """One input file: the PNG written (``output``) and the class explained, or ``error`` when it failed."""

    path: Path
    output: Path | None
    class_name: str = ""
    probability: float = float("nan")
    error: str | None = None


def _save(img: Image.Image, path: Path) -> None:
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def explain_files(inf: Inference, paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
                  target: int | None = None, method: str = "gradcam", layer: int | None = None,
                  sheet: str | os.PathLike | None = None, batch_size: int = 32,
                  workers: int = 2) -> Iterator[ExplainedImage]:
    """Write ``out_dir/<stem>.png`` for each image (see :func:`explanation_panel`), and the contact sheet
    ``sheet`` of them all after the last; yields one result per file, bad files with their error.
    An optimized ``inf`` is explained through its eager network (:meth:`Inference.eager`)."""
    inf = inf.eager()
    paths = [Path(p) for p in paths]
    out_dir = Path(out_dir)
    names = output_names(paths)
    label, pairs = _id_name_pairs(inf.classes)
    num_classes = getattr(inf.model, "num_classes", len(pairs))
    if num_classes != len(pairs):
        raise BadInput(f"the model has {num_classes} classes but {label} class list has {len(pairs)}")
    panels = []
    for batch, all_paths in inf.batches(paths, batch_size, workers):
        for index, message in batch.errors:
            yield ExplainedImage(all_paths[index], None, error=message)
        if not len(batch.indices):
            continue
        found = explain(inf.model, batch.images, target, method, layer)
        maps = found.maps.float().cpu().numpy()
        caption = f"{METHOD_NAMES[method]}, stage {found.layer}"
        for i, index in enumerate(batch.indices.tolist()):
            path = all_paths[index]
            try:
                photo = load_img(path)
            except ImageLoadError as e:  # changed since it was decoded for the batch
                yield ExplainedImage(path, None, error=str(e))
                continue
            name, prob = pairs[int(found.classes[i])][1], float(found.probabilities[i])
            panel = explanation_panel(panel_view(photo, inf.preprocessing), maps[i], f"{name}  {prob:.1%}",
                                      f"{path.name} · {caption}")
            _save(panel, out_dir / names[index])
            if sheet is not None:
                panels.append(panel)
            yield ExplainedImage(path, out_dir / names[index], name, prob)
    if sheet is not None and panels:
        _save(contact_sheet(panels), Path(sheet))
