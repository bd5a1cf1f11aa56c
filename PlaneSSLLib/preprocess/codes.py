"""Integer codes of views and anatomies used in the cache index and in dataset items."""

from __future__ import annotations

__all__ = ["ANATOMIES", "VIEW_CODES", "VIEW_NAMES", "VIEWS_BY_ANATOMY", "view_code", "anatomy_code"]

#: Anatomy codes (index into this tuple).
ANATOMIES = ("heart", "knee")
#: Views of each anatomy, in channel order (see ``pairs``).
VIEWS_BY_ANATOMY = {"heart": ("2CH", "3CH", "4CH", "SAX"), "knee": ("SAG", "COR", "AX")}
#: Global view codes: heart 0–3, knee 4–6 (the order of ``VIEWS_BY_ANATOMY``).
VIEW_NAMES = tuple(v for a in ANATOMIES for v in VIEWS_BY_ANATOMY[a])
VIEW_CODES = {name: i for i, name in enumerate(VIEW_NAMES)}


def view_code(name: str) -> int:
    """Global code of a view label ("SAX", "2CH", ..., "AX"); KeyError for an unknown one."""
    try:
        return VIEW_CODES[name]
    except KeyError:
        raise KeyError(f"unknown view label {name!r} (known: {', '.join(VIEW_NAMES)})") from None


def anatomy_code(name: str) -> int:
    return ANATOMIES.index(name)
