"""Placeholder for `planessl inspect` (being written)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("inspect", help="(not yet available)")
    p.set_defaults(func=lambda args: 1)
    return p
