"""Pretext evaluation: how well a network finds the other views' planes and a slice's position.

For every held-out image and every valid line channel, the predicted heatmap is fitted with a
line (``inference.line_fit``) and compared with the true line from the DICOM geometry:

- angle error, degrees in [0, 90];
- distance error, millimetres: how far apart the two lines pass from the image centre
  (``line_distance_error_px`` × the prepared pixel size, square pixels);
- a channel whose heatmap holds no line (peak below ``min_peak``) is a *miss*: it is counted,
  and enters the medians as 90° / NaN mm so that a network cannot look good by staying silent.

Location: mean absolute error of the predicted relative slice location over images whose stack
has at least two positions, overall and per view; and the *mirror-confusion rate*: among images
whose true location ``t`` lies away from the middle (``|t - 0.5| > 0.2``), the share whose
prediction lies nearer ``1 - t`` than ``t`` (a knee read as its mirror image puts a lateral
slice on the medial side; a network that learnt only "how far from the middle" scores 50 %).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_path
from ..geometry.lines import ImageLine, clip_line_to_rect
from ..inference.line_fit import fit_line, line_angle_error_deg, line_distance_error_px
from ..preprocess.codes import VIEW_NAMES
from .view_heads import batch_heads, head_lookup

__all__ = ["PairErrors", "PretextReport", "evaluate_pretext", "location_errors", "untrained_like"]

#: Images whose true relative location is within this distance of 0.5 do not count for mirror confusion.
MIRROR_MARGIN = 0.2


def location_errors(predicted: np.ndarray, true: np.ndarray) -> dict:
    """Location MAE and mirror-confusion rate (module docstring) of predicted vs true relative locations."""
    p, t = np.asarray(predicted, np.float64), np.asarray(true, np.float64)
    away = np.abs(t - 0.5) > MIRROR_MARGIN
    mirrored = np.abs(p - (1 - t)) < np.abs(p - t)
    return {
        "mae": float(np.mean(np.abs(p - t))) if t.size else math.nan,
        "n": int(t.size),
        "mirror_confusion": float(np.mean(mirrored[away])) if away.any() else math.nan,
        "n_mirror": int(away.sum()),
    }


@dataclass
class PairErrors:
    """Errors of one (input view, partner channel) pair over the evaluated images."""

    angle_deg: list[float] = field(default_factory=list)
    distance_mm: list[float] = field(default_factory=list)
    misses: int = 0

    def summary(self) -> dict:
        a = np.asarray(self.angle_deg, dtype=np.float64)
        d = np.asarray(self.distance_mm, dtype=np.float64)
        n = len(a)
        return {
            "n": n,
            "misses": self.misses,
            "median_angle_deg": float(np.median(a)) if n else math.nan,
            "mean_angle_deg": float(np.mean(a)) if n else math.nan,
            "median_distance_mm": float(np.nanmedian(d)) if n and np.isfinite(d).any() else math.nan,
            "mean_distance_mm": float(np.nanmean(d)) if n and np.isfinite(d).any() else math.nan,
        }


def _number_or_null(value):
    """``value``, or None where it is a float that is NaN or infinite."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


@dataclass
class PretextReport:
    pairs: dict[str, dict]
    overall_median_angle_deg: float
    overall_median_distance_mm: float
    location_mae: float
    n_images: int
    n_location: int
    overlays: list[str] = field(default_factory=list)
    mirror_confusion: float = math.nan
    n_mirror: int = 0
    location_by_view: dict[str, dict] = field(default_factory=dict)  #: view name -> location_errors()

    def as_dict(self) -> dict:
        """The report as JSON-able values: an error that is undefined (every line of a pair missed, no
        location target) is null, never NaN (not JSON)."""
        return {
            "overall": {
                "median_angle_deg": _number_or_null(self.overall_median_angle_deg),
                "median_distance_mm": _number_or_null(self.overall_median_distance_mm),
                "location_mae": _number_or_null(self.location_mae),
                "mirror_confusion": _number_or_null(self.mirror_confusion),
                "n_images": self.n_images,
                "n_location": self.n_location,
                "n_mirror": self.n_mirror,
            },
            "location_by_view": {view: {name: _number_or_null(v) for name, v in e.items()}
                                 for view, e in self.location_by_view.items()},
            "pairs": {k: {name: _number_or_null(v) for name, v in pair.items()} for k, pair in self.pairs.items()},
            "overlays": self.overlays,
        }

    def markdown(self, title: str = "Pretext evaluation") -> str:
        lines = [
            f"### {title}",
            "",
            f"{self.n_images} images; median line angle error {self.overall_median_angle_deg:.1f}°, "
            f"median distance error {self.overall_median_distance_mm:.1f} mm; location MAE "
            f"{self.location_mae:.3f} ({self.n_location} images), mirror confusion "
            f"{self.mirror_confusion:.1%} ({self.n_mirror} images with |t - 0.5| > {MIRROR_MARGIN}).",
            "",
            "| image view ← partner line | n | misses | median angle (°) | median distance (mm) |",
            "|---|---|---|---|---|",
        ]
        for key, s in sorted(self.pairs.items()):
            lines.append(
                f"| {key} | {s['n']} | {s['misses']} | {s['median_angle_deg']:.1f} | {s['median_distance_mm']:.1f} |"
            )
        if self.location_by_view:
            lines += ["", "| view | n | location MAE | mirror confusion (n) |", "|---|---|---|---|"]
            for view, e in sorted(self.location_by_view.items()):
                lines.append(f"| {view} | {e['n']} | {e['mae']:.3f} | {e['mirror_confusion']:.1%} ({e['n_mirror']}) |")
        return "\n".join(lines) + "\n"


def untrained_like(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """A freshly initialised network of the same architecture: the 'no pretraining' baseline."""
    torch.manual_seed(seed)
    return type(model)(model.config)  # type: ignore[call-arg]


@torch.no_grad()
def evaluate_pretext(
    model: torch.nn.Module,
    dataset,
    items: Sequence[int] | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 16,
    min_peak: float = 0.05,
    overlay_dir: str | Path | None = None,
    n_overlays: int = 4,
) -> PretextReport:
    """Evaluate ``model`` on ``dataset`` items (default: all); see the module docstring."""
    model = model.to(device).eval()
    items = list(range(len(dataset))) if items is None else list(items)
    channels = list(dataset.channels)
    spacing = dataset.cache.index["spacing_mm"]
    pairs: dict[str, PairErrors] = defaultdict(PairErrors)
    all_angles: list[float] = []
    all_dist: list[float] = []
    loc_pred: list[float] = []
    loc_true: list[float] = []
    loc_view: list[int] = []
    overlays: list[str] = []
    overlay_done_views: set[int] = set()
    h, w = dataset.image_shape
    centre = ((w - 1) / 2.0, (h - 1) / 2.0)
    for start in range(0, len(items), batch_size):
        batch = [dataset[i] for i in items[start : start + batch_size]]
        images = torch.stack([b["image"] for b in batch]).to(device)
        heads = batch_heads(head_lookup(model.config), torch.stack([b["view"] for b in batch])) \
            if getattr(model, "config", None) is not None and model.config.head_views else None
        out = model(images) if heads is None else model(images, heads.to(device))
        heat = out["lines"].float().cpu().numpy() if "lines" in out else None
        loc = out["location"].float().cpu().numpy() if "location" in out else None
        for j, b in enumerate(batch):
            view = int(b["view"])
            row = int(b["index"])
            px_mm = float(np.mean(spacing[row]))
            if loc is not None and bool(b["location_valid"]):
                loc_pred.append(float(loc[j]))
                loc_true.append(float(b["location"]))
                loc_view.append(view)
            if heat is None:
                continue
            fitted: dict[int, ImageLine | None] = {}
            for c, name in enumerate(channels):
                if not bool(b["line_valid"][c]):
                    continue
                true = ImageLine(*(float(v) for v in b["lines"][c]))
                fit = fit_line(heat[j, c], min_peak=min_peak)
                key = f"{VIEW_NAMES[view]} ← {name}"
                if fit is None:
                    pairs[key].misses += 1
                    angle, dist = 90.0, math.nan
                else:
                    angle = line_angle_error_deg(fit.line, true)
                    dist = line_distance_error_px(fit.line, true, centre) * px_mm
                fitted[c] = None if fit is None else fit.line
                pairs[key].angle_deg.append(angle)
                pairs[key].distance_mm.append(dist)
                all_angles.append(angle)
                all_dist.append(dist)
            if overlay_dir is not None and len(overlays) < n_overlays and view not in overlay_done_views:
                overlay_done_views.add(view)
                path = Path(overlay_dir) / f"overlay_{len(overlays):02d}_{VIEW_NAMES[view]}.png"
                _write_overlay(path, b, fitted, channels)
                overlays.append(str(path))
    d = np.asarray(all_dist, dtype=np.float64)
    pred, true_loc, views = np.asarray(loc_pred), np.asarray(loc_true), np.asarray(loc_view, dtype=int)
    overall = location_errors(pred, true_loc)
    by_view = {VIEW_NAMES[v]: location_errors(pred[views == v], true_loc[views == v]) for v in sorted(set(loc_view))}
    return PretextReport(
        pairs={k: v.summary() for k, v in pairs.items()},
        overall_median_angle_deg=float(np.median(all_angles)) if all_angles else math.nan,
        overall_median_distance_mm=float(np.nanmedian(d)) if np.isfinite(d).any() else math.nan,
        location_mae=overall["mae"],
        n_images=len(items),
        n_location=overall["n"],
        overlays=overlays,
        mirror_confusion=overall["mirror_confusion"],
        n_mirror=overall["n_mirror"],
        location_by_view=by_view,
    )


_COLOURS = {"2CH": "#f4c542", "3CH": "#6fd36f", "4CH": "#56b4ff", "SAX": "#ff6b6b",
            "SAG": "#f4c542", "COR": "#6fd36f", "AX": "#56b4ff"}


def _write_overlay(path: Path, item: dict, fitted: dict[int, ImageLine | None], channels: list[str]) -> None:
    """PNG of the image with true (solid) and predicted (dashed) lines per partner view."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image = item["image"][0].numpy()
    h, w = image.shape
    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    ax.imshow(image, cmap="gray", interpolation="nearest")
    for c, name in enumerate(channels):
        if not bool(item["line_valid"][c]):
            continue
        colour = _COLOURS.get(name, "white")
        true = clip_line_to_rect(ImageLine(*(float(v) for v in item["lines"][c])), (h, w))
        if true is not None:
            ax.plot([true.p0[0], true.p1[0]], [true.p0[1], true.p1[1]], "-", color=colour, lw=1.5, label=f"{name} true")
        pred = fitted.get(c)
        seg = None if pred is None else clip_line_to_rect(pred, (h, w))
        if seg is not None:
            ax.plot([seg.p0[0], seg.p1[0]], [seg.p0[1], seg.p1[1]], "--", color=colour, lw=1.5,
                    label=f"{name} predicted")
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.axis("off")
    ax.legend(loc="lower right", fontsize=6, framealpha=0.6)
    fig.tight_layout(pad=0.1)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
