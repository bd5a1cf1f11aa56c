"""Why the knee's pretext figures are what they are, measured without training (README, "Pretext results").

On a prepared knee cache (``planessl prepare ... --anatomy knee``) it prints:

- the sagittal side cues: a leave-one-subject-out nearest neighbour on the prepared SAG pixels (per image
  z-score, 2x2 mean-pooled) and on each image's intensity histogram (how much of each tissue, not where):
  location MAE and mirror-confusion rate of the neighbour's location (``training.pretext_eval.location_errors``);
- the line targets: their direction per input view and channel (degrees from the image's vertical), and the
  distance of every line from the image centre (px);

and with ``--run RUN`` (a ``planessl pretrain`` output on that cache), for the held-out axial images, how far the
fitted COR-channel line lies from the true COR line, from the true SAG line and from the vertical::

    nice -n 10 python scripts/knee_pretext_probe.py --cache cache/knee_clinical [--run runs/knee_clinical]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def _neighbour_location(features: np.ndarray, location: np.ndarray, subject: np.ndarray) -> np.ndarray:
    """Location of each image's nearest neighbour (squared L2) among the other subjects' images."""
    sq = (features**2).sum(1)
    d2 = sq[:, None] + sq[None] - 2.0 * features @ features.T
    d2[subject[:, None] == subject[None]] = np.inf
    return location[np.argmin(d2, axis=1)]


def side_cues(cache) -> None:
    from PlaneSSLLib.preprocess.codes import VIEW_CODES
    from PlaneSSLLib.training.pretext_eval import location_errors

    ix = cache.index
    rows = np.flatnonzero(ix["view"] == VIEW_CODES["SAG"])
    images = np.asarray(cache.images[rows], np.float32)
    n, h, w = images.shape
    pixels = images[:, : h // 2 * 2, : w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2).mean(axis=(2, 4)).reshape(n, -1)
    pixels = (pixels - pixels.mean(1, keepdims=True)) / (pixels.std(1, keepdims=True) + 1e-6)
    lo, hi = float(images.min()), float(images.max())
    hist = np.stack([np.histogram(im, bins=32, range=(lo, hi))[0] for im in images]).astype(np.float32)
    hist /= hist.sum(1, keepdims=True)
    t, subject = ix["location"][rows].astype(np.float64), ix["subject"][rows]
    for name, feats in (("pixels", pixels), ("intensity histogram", hist)):
        e = location_errors(_neighbour_location(feats, t, subject), t)
        print(f"SAG nearest neighbour on {name}: location MAE {e['mae']:.3f}, mirror confusion "
              f"{e['mirror_confusion']:.1%} ({e['n_mirror']} of {e['n']} slices)")


def line_directions(cache) -> None:
    from PlaneSSLLib.data.pairs import line_targets
    from PlaneSSLLib.preprocess.codes import VIEW_CODES, VIEWS_BY_ANATOMY

    ix = cache.index
    rows = np.flatnonzero(ix["anatomy"] == 1)
    lines, valid, _ = line_targets(ix, rows, "knee")
    views = ix["view"][rows]
    h, w = (int(x) for x in ix["shape_px"][rows[0]])
    channels = VIEWS_BY_ANATOMY["knee"]
    for image_view in channels:
        for k, channel in enumerate(channels):
            sel = valid[:, k] & (views == VIEW_CODES[image_view])
            if not sel.any():
                continue
            a, b, d = lines[sel, k, 0], lines[sel, k, 1], lines[sel, k, 2]
            from_vertical = np.degrees(np.arccos(np.clip(np.abs(a), 0.0, 1.0)))  # direction (-b, a) vs (0, 1)
            centre = np.abs(a * (w - 1) / 2 + b * (h - 1) / 2 + d)
            print(f"{image_view} <- {channel}: {sel.sum()} lines, median {np.median(from_vertical):.1f} deg from "
                  f"vertical (5-95 %: {np.percentile(from_vertical, 5):.1f}-{np.percentile(from_vertical, 95):.1f}); "
                  f"at most {centre.max():.1f} px from the image centre")


def axial_cor_channel(run: Path) -> None:
    import torch

    from PlaneSSLLib.geometry.lines import ImageLine
    from PlaneSSLLib.inference.line_fit import fit_line, line_angle_error_deg
    from PlaneSSLLib.inference.weights import load_exported
    from PlaneSSLLib.preprocess.codes import VIEW_CODES
    from PlaneSSLLib.training.config import load_config
    from PlaneSSLLib.training.data_hooks import build_datasets

    config = load_config(run / "config.yaml")
    _, val, _, _ = build_datasets(config)
    model, _ = load_exported(run / "model", device="cpu")
    model.eval()
    sag, cor = val.channels.index("SAG"), val.channels.index("COR")
    errors: list[tuple[float, float, float]] = []
    with torch.no_grad():
        for i in np.flatnonzero(val.view.numpy() == VIEW_CODES["AX"]).tolist():
            item = val[i]
            fit = fit_line(model(item["image"][None])["lines"][0, cor].numpy())
            if fit is None:
                continue
            errors.append((line_angle_error_deg(fit.line, ImageLine(*map(float, item["lines"][cor]))),
                           line_angle_error_deg(fit.line, ImageLine(*map(float, item["lines"][sag]))),
                           line_angle_error_deg(fit.line, ImageLine(1.0, 0.0, 0.0))))
    e = np.asarray(errors)
    print(f"{run}: held-out AX images, COR channel fitted in {len(e)}: median {np.median(e[:, 0]):.1f} deg from the "
          f"true COR line, {np.median(e[:, 1]):.1f} deg from the true SAG line, "
          f"{np.median(e[:, 2]):.1f} deg from vertical")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, required=True, help="a prepared knee cache (planessl prepare)")
    parser.add_argument("--run", type=Path, default=None, help="a planessl pretrain output on that cache")
    args = parser.parse_args()
    from PlaneSSLLib.data.cache import open_cache

    cache = open_cache(args.cache)
    side_cues(cache)
    line_directions(cache)
    if args.run is not None:
        axial_cor_channel(args.run)


if __name__ == "__main__":
    main()
