"""Weights in, arrays/lines/probabilities out; torch + numpy only (no MONAI, no training stack)."""
