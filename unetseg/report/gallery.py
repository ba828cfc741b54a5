"""A failure gallery: one self-contained HTML page that shows a model's worst images first.

A mean Dice hides where a model fails; a person finds it by looking: the vignette predicted as
lesion, the merged nuclei, the broken vessel. ``unetseg evaluate --report`` writes this page:
the per-image scores sorted worst first, then for each image the picture, the truth, the
prediction and the error overlay (false positives orange, false negatives blue), all embedded
as PNG, so the page can be mailed or attached to an issue as one file.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from unetseg.report.document import CSS

THUMB = 360  # the longest side of each picture on the page, in pixels
MAX_CARDS = 24  # images pictured, worst first; every image is in the table (a page of 100 was 20 MB)

GALLERY_CSS = """
.card{border:1px solid #ddd;border-radius:6px;padding:.6em .8em;margin:1em 0}
.card h3{font-size:1em;margin:.2em 0 .5em;overflow-wrap:anywhere}
.panels{display:grid;grid-template-columns:repeat(auto-fill,minmax(220px,1fr));gap:.6em}
.panels figure{margin:0}.panels figcaption{text-align:center}
.scores{color:#444;font-size:.9em}td:nth-child(2),th:nth-child(2){text-align:left}
"""


@dataclass
class GalleryItem:
    """One image of the gallery: its scores and its four pictures (8-bit RGB)."""

    name: str
    scores: dict[str, float]
    image: np.ndarray
    truth: np.ndarray
    prediction: np.ndarray
    errors: np.ndarray


def _thumbnail(rgb: np.ndarray, photo: bool) -> str:
    """A data URI: JPEG for pictures (a tenth of a PNG's size), PNG for flat masks (exact colours)."""
    h, w = rgb.shape[:2]
    factor = min(1.0, THUMB / max(h, w))
    if factor < 1.0:
        interpolation = cv2.INTER_AREA if photo else cv2.INTER_NEAREST
        rgb = cv2.resize(rgb, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=interpolation)
    kind, params = (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 85]) if photo else (".png", [])
    ok, data = cv2.imencode(kind, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    assert ok
    mime = "jpeg" if photo else "png"
    return f"data:image/{mime};base64,{base64.b64encode(data.tobytes()).decode()}"


def _score_text(scores: dict[str, float], keys: Sequence[str]) -> str:
    return ", ".join(f"{k} {scores[k]:.4f}" for k in keys if k in scores)


def render_gallery(title: str, intro: str, items: list[GalleryItem], sort_key: str = "dice") -> str:
    """The page, images sorted by ``sort_key`` ascending (worst first for Dice)."""
    ordered = sorted(items, key=lambda item: item.scores.get(sort_key, 0.0))
    keys = [k for k in ordered[0].scores if k in ("dice", "iou", "pixel_error", "object_f1")] if ordered else []
    head = "".join(f"<th>{html.escape(k)}</th>" for k in ["rank", "image", *keys])
    rows = "".join(
        f"<tr><td>{rank}</td><td><a href='#img{rank}'>{html.escape(item.name)}</a></td>"
        + "".join(f"<td>{item.scores[k]:.4f}</td>" for k in keys)
        + "</tr>"
        for rank, item in enumerate(ordered, 1)
    )
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
        f"<title>{html.escape(title)}</title><style>{CSS}{GALLERY_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        *(f"<p>{html.escape(p)}</p>" for p in intro.split("\n\n") if p),
        f"<h2>Images, worst {html.escape(sort_key)} first</h2>",
        f"<div class='wide'><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>",
    ]
    if len(ordered) > MAX_CARDS:
        parts.append(f"<p>The {MAX_CARDS} worst images are pictured below; the others are in the table only.</p>")
    for rank, item in enumerate(ordered[:MAX_CARDS], 1):
        panels = "".join(
            f"<figure><img alt='{html.escape(label)} of {html.escape(item.name)}' "
            f"src='{_thumbnail(picture, photo)}'><figcaption>{label}</figcaption></figure>"
            for label, picture, photo in (
                ("image", item.image, True),
                ("truth", item.truth, False),
                ("prediction", item.prediction, False),
                ("errors (orange: false positive, blue: false negative)", item.errors, True),
            )
        )
        parts.append(
            f"<div class='card' id='img{rank}'><h3>{rank}. {html.escape(item.name)}</h3>"
            f"<p class='scores'>{html.escape(_score_text(item.scores, keys))}</p><div class='panels'>{panels}</div></div>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)
