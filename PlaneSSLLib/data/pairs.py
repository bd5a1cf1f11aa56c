"""Partner views and the line targets of the "relative orientation" pretext task (numpy only).

Channel layout (fixed per anatomy, the same for every input view, so a network has one set of
line channels and channel k always means the same partner view):

    heart: C = 4, channels [2CH, 3CH, 4CH, SAX]
    knee:  C = 3, channels [SAG, COR, AX]

Channel k of an image of view V holds the line where the plane of view ``channels[k]`` cuts the
image. It is *valid* only when ``channels[k]`` is one of V's configured partners (so the
self-view channel is always masked), the study has that view, the two planes are not parallel
(``geometry.lines.PARALLEL_TOLERANCE_DEG``) and the line crosses the prepared image rectangle
(a line outside the image would be an all-zero target). Defaults (``DEFAULT_PARTNERS``): heart
SAX → 2CH, 3CH, 4CH; each long-axis view → the other two long-axis views and SAX; knee: each of
SAG/COR/AX → the other two.

Which partner image: a view's lines come from one representative image per study: its stack
with the most positions (then the lowest stack id), and in that stack the middle position
(``(n − 1) // 2`` in anatomical order: the mid-ventricular slice for SAX; ``sax_partner="basal"``
takes position 0, the base, instead). The phase does not matter: every cine phase of a position
lies in the same plane, so the line is the same for all of them (partner images themselves are
never loaded).

Coefficients ``(a, b, d)`` with ``a² + b² = 1`` over pixel coordinates of the prepared image
(x = column, y = row), exactly ``geometry.lines.image_line(prepared_plane, partner_plane)``,
computed for all slices at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ..geometry.lines import PARALLEL_TOLERANCE_DEG
from ..preprocess.codes import ANATOMIES, VIEW_CODES, VIEW_NAMES, VIEWS_BY_ANATOMY, anatomy_code

__all__ = [
    "DEFAULT_PARTNERS",
    "REASONS",
    "PairConfig",
    "representative_rows",
    "line_targets",
    "partner_summary",
]

DEFAULT_PARTNERS: dict[str, dict[str, tuple[str, ...]]] = {
    "heart": {
        "SAX": ("2CH", "3CH", "4CH"),
        "2CH": ("3CH", "4CH", "SAX"),
        "3CH": ("2CH", "4CH", "SAX"),
        "4CH": ("2CH", "3CH", "SAX"),
    },
    "knee": {"SAG": ("COR", "AX"), "COR": ("SAG", "AX"), "AX": ("SAG", "COR")},
}

#: Why a channel is masked (``line_targets``' ``reason`` codes).
REASONS = {0: "valid", 1: "not a partner of this view", 2: "partner view missing", 3: "parallel planes",
           4: "line misses the image"}
VALID, NOT_PARTNER, MISSING, PARALLEL, OUTSIDE = range(5)


@dataclass(frozen=True)
class PairConfig:
    """Which partner views give line targets, per anatomy and input view (module docstring)."""

    partners: Mapping[str, Mapping[str, tuple[str, ...]]] = field(default_factory=lambda: DEFAULT_PARTNERS)
    sax_partner: str = "mid"  # "mid" or "basal": which SAX slice is the partner of a long-axis image
    require_crossing: bool = True  # mask lines that miss the image rectangle

    def __post_init__(self) -> None:
        if self.sax_partner not in ("mid", "basal"):
            raise ValueError(f"sax_partner must be 'mid' or 'basal', got {self.sax_partner!r}")
        for anatomy, table in self.partners.items():
            if anatomy not in VIEWS_BY_ANATOMY:
                raise ValueError(f"unknown anatomy {anatomy!r} in partner config")
            for view, partners in table.items():
                bad = [v for v in (view, *partners) if v not in VIEWS_BY_ANATOMY[anatomy]]
                if bad:
                    known = ", ".join(VIEWS_BY_ANATOMY[anatomy])
                    raise ValueError(f"{anatomy} partner config: unknown views {bad} (known: {known})")

    @staticmethod
    def channels(anatomy: str) -> tuple[str, ...]:
        """Channel order of the line targets for ``anatomy``."""
        return VIEWS_BY_ANATOMY[anatomy]

    def without_sax_for_long_axis(self) -> PairConfig:
        """The heart variant where long-axis images get only the other long-axis lines."""
        heart = {v: tuple(p for p in ps if v == "SAX" or p != "SAX") for v, ps in self.partners["heart"].items()}
        return PairConfig({**self.partners, "heart": heart}, self.sax_partner, self.require_crossing)

    def partner_matrix(self, anatomy: str) -> np.ndarray:
        """``(n_view_codes, C)`` bool: is channel k a configured partner of input view code v."""
        channels = self.channels(anatomy)
        m = np.zeros((len(VIEW_NAMES), len(channels)), dtype=bool)
        for view, partners in self.partners.get(anatomy, {}).items():
            for p in partners:
                m[VIEW_CODES[view], channels.index(p)] = p != view
        return m

    def to_dict(self) -> dict:
        return {
            "partners": {a: {v: list(p) for v, p in t.items()} for a, t in self.partners.items()},
            "sax_partner": self.sax_partner,
            "require_crossing": self.require_crossing,
            "channels": {a: list(VIEWS_BY_ANATOMY[a]) for a in ANATOMIES},
        }


def representative_rows(index: np.ndarray, sax_partner: str = "mid") -> dict[tuple[int, int], int]:
    """``{(study, view code): row}``: the image whose plane stands for that view in that study."""
    best: dict[tuple[int, int], tuple[tuple[int, int], int]] = {}  # key -> ((-n_positions, stack), stack)
    for stack in np.unique(index["stack"]).tolist():
        rows = np.flatnonzero(index["stack"] == stack)
        r0 = index[rows[0]]
        key = (int(r0["study"]), int(r0["view"]))
        rank = (-int(r0["n_positions"]), int(stack))
        if key not in best or rank < best[key][0]:
            best[key] = (rank, int(stack))
    out: dict[tuple[int, int], int] = {}
    for key, (_, stack) in best.items():
        rows = np.flatnonzero(index["stack"] == stack)
        n = int(index["n_positions"][rows[0]])
        want = 0 if (VIEW_NAMES[key[1]] == "SAX" and sax_partner == "basal") else (n - 1) // 2
        candidates = rows[index["position"][rows] == want]
        if len(candidates) == 0:  # pragma: no cover - positions are 0..n-1 by construction
            candidates = rows
        # lowest phase of that position (all phases share the plane)
        out[key] = int(candidates[np.argmin(index["phase"][candidates])])
    return out


def _normals(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    n = np.cross(x, y)
    return n / np.linalg.norm(n, axis=-1, keepdims=True)


def line_targets(
    index: np.ndarray, rows: np.ndarray, anatomy: str, config: PairConfig | None = None,
    tol_deg: float = PARALLEL_TOLERANCE_DEG,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Line coefficients of every slice ``rows`` of the cache ``index`` (all of one anatomy).

    Returns ``(lines float32 (n, C, 3), valid bool (n, C), reason int8 (n, C))``; invalid channels
    hold ``(1, 0, 0)`` placeholders (never used: they are masked). ``reason`` codes: ``REASONS``.
    """
    config = config or PairConfig()
    rows = np.asarray(rows, dtype=np.int64)
    sub = index[rows]
    if np.any(sub["anatomy"] != anatomy_code(anatomy)):
        raise ValueError(f"line_targets: rows of another anatomy than {anatomy}")
    channels = config.channels(anatomy)
    n, c = len(rows), len(channels)
    reps = representative_rows(index, config.sax_partner)
    n_studies = int(index["study"].max()) + 1 if len(index) else 0
    partner = np.full((n, c), -1, dtype=np.int64)
    for k, view in enumerate(channels):
        table = np.full(n_studies, -1, dtype=np.int64)
        for (study, code), row in reps.items():
            if code == VIEW_CODES[view]:
                table[study] = row
        partner[:, k] = table[sub["study"]] if n else partner[:, k]
    is_partner = config.partner_matrix(anatomy)[sub["view"].astype(np.int64)]  # (n, C)
    reason = np.where(is_partner, np.where(partner >= 0, VALID, MISSING), NOT_PARTNER).astype(np.int8)

    # Geometry of A (the slice) and B (its partner per channel); broadcast (n, C, 3).
    p = index[np.where(partner >= 0, partner, 0)]
    xa, ya, oa = sub["x_dir_lps"][:, None], sub["y_dir_lps"][:, None], sub["origin_lps"][:, None]
    dr, dc = sub["spacing_mm"][:, 0][:, None], sub["spacing_mm"][:, 1][:, None]
    na = _normals(xa, ya)
    nb = _normals(p["x_dir_lps"], p["y_dir_lps"])
    angle = np.degrees(np.arctan2(np.linalg.norm(np.cross(na, nb), axis=-1), np.abs(np.sum(na * nb, axis=-1))))
    a = dc * np.sum(nb * xa, axis=-1)
    b = dr * np.sum(nb * ya, axis=-1)
    d = np.sum(nb * (oa - p["origin_lps"]), axis=-1)
    norm = np.hypot(a, b)
    parallel = (angle <= tol_deg) | (norm < 1e-12)
    reason[(reason == VALID) & parallel] = PARALLEL
    safe = np.where(norm > 1e-12, norm, 1.0)
    lines = np.stack([a / safe, b / safe, d / safe], axis=-1)
    if config.require_crossing:
        h, w = sub["shape_px"][:, 0][:, None], sub["shape_px"][:, 1][:, None]
        corners_x = np.stack([-0.5 + 0 * w, w - 0.5, w - 0.5, -0.5 + 0 * w], axis=-1)  # (n, 1, 4)
        corners_y = np.stack([-0.5 + 0 * h, -0.5 + 0 * h, h - 0.5, h - 0.5], axis=-1)
        dist = lines[..., 0:1] * corners_x + lines[..., 1:2] * corners_y + lines[..., 2:3]
        crosses = (dist.min(axis=-1) <= 0) & (dist.max(axis=-1) >= 0)
        reason[(reason == VALID) & ~crosses] = OUTSIDE
    valid = reason == VALID
    lines[~valid] = (1.0, 0.0, 0.0)
    return lines.astype(np.float32), valid, reason


def partner_summary(
    index: np.ndarray, rows: np.ndarray, anatomy: str, valid: np.ndarray, reason: np.ndarray,
    config: PairConfig | None = None,
) -> tuple[list[str], list[str]]:
    """Human-readable lines on line-target coverage, and warnings for views left without any line.

    Returns ``(summary lines, warnings)``; a warning names each view whose slices (some or all)
    have every channel masked, with the studies concerned.
    """
    config = config or PairConfig()
    channels = config.channels(anatomy)
    sub = index[np.asarray(rows, dtype=np.int64)]
    summary, warnings = [], []
    for view in VIEWS_BY_ANATOMY[anatomy]:
        sel = sub["view"] == VIEW_CODES[view]
        if not sel.any():
            continue
        parts = []
        for k, ch in enumerate(channels):
            if ch not in config.partners.get(anatomy, {}).get(view, ()) or ch == view:
                continue
            r = reason[sel, k]
            parts.append(f"{ch} {100.0 * float(np.mean(r == VALID)):.0f}%")
        described = ", ".join(parts) or "none configured"
        summary.append(f"{anatomy} {view}: {int(sel.sum())} slices; valid line channels: {described}")
        empty = sel & ~valid.any(axis=1)
        if empty.any():
            studies = sorted({str(s) for s in sub["study_key"][empty].tolist()})
            causes = sorted({REASONS[int(x)] for x in reason[empty].ravel().tolist() if x != NOT_PARTNER}) or [
                "no partner view configured"
            ]
            shown = ", ".join(studies[:5]) + (f" and {len(studies) - 5} more" if len(studies) > 5 else "")
            warnings.append(
                f"{int(empty.sum())} of {int(sel.sum())} {anatomy} {view} slices have no valid partner line "
                f"({'; '.join(causes)}; studies {shown}): they train the location task only"
            )
    return summary, warnings
