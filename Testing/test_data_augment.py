"""Batched augmentation: the image and its line targets move together (same pixel map)."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from PlaneSSLLib.data.augment import AugmentConfig, augment_batch, lines_cross_image, normalised_from_pixel  # noqa: E402

H, W = 64, 96  # not square, so that a height/width mix-up shows


def _lines(batch: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    angle = torch.rand(batch, generator=g, dtype=torch.float64) * math.pi
    a, b = torch.cos(angle), torch.sin(angle)
    # through a point near the centre
    px = (W - 1) / 2 + (torch.rand(batch, generator=g, dtype=torch.float64) - 0.5) * 20
    py = (H - 1) / 2 + (torch.rand(batch, generator=g, dtype=torch.float64) - 0.5) * 20
    return torch.stack([a, b, -(a * px + b * py)], dim=-1).unsqueeze(1)  # (B, 1, 3)


def _draw(lines: torch.Tensor, half_width: float = 0.6) -> torch.Tensor:
    x = torch.arange(W, dtype=torch.float64).view(1, 1, W)
    y = torch.arange(H, dtype=torch.float64).view(1, H, 1)
    a, b, d = (lines[:, 0, i].view(-1, 1, 1) for i in range(3))
    return ((a * x + b * y + d).abs() <= half_width).to(torch.float32).unsqueeze(1)


def test_normalised_map_matches_grid_sample_convention():
    n = normalised_from_pixel(H, W)
    centre_of_first = n @ torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    assert torch.allclose(centre_of_first[:2], torch.tensor([-1 + 1 / W, -1 + 1 / H], dtype=torch.float64))
    edge = n @ torch.tensor([W - 0.5, H - 0.5, 1.0], dtype=torch.float64)
    assert torch.allclose(edge[:2], torch.ones(2, dtype=torch.float64))


def test_identity_augmentation_is_exact():
    img = torch.rand(3, 1, H, W)
    lines = _lines(3).to(torch.float32)
    cfg = AugmentConfig(rotation_deg=0.0, scale_range=(1.0, 1.0), intensity=False)
    out = augment_batch({"image": img, "lines": lines, "line_valid": torch.ones(3, 1, dtype=torch.bool)},
                        torch.Generator().manual_seed(0), cfg)
    assert torch.allclose(out["image"], img, atol=1e-5)
    assert torch.allclose(out["lines"], lines, atol=1e-6)


@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_drawn_line_stays_on_transformed_line(flip):
    batch = 8
    lines = _lines(batch, seed=1)
    img = _draw(lines)
    cfg = AugmentConfig(rotation_deg=15.0, scale_range=(0.9, 1.1), flip_prob=flip, intensity=False)
    valid = torch.ones(batch, 1, dtype=torch.bool)
    out = augment_batch({"image": img, "lines": lines.to(torch.float32), "line_valid": valid},
                        torch.Generator().manual_seed(42), cfg)
    moved = out["lines"].to(torch.float64)
    assert torch.allclose(moved[..., 0] ** 2 + moved[..., 1] ** 2, torch.ones(batch, 1, dtype=torch.float64), atol=1e-5)
    assert not torch.allclose(moved, lines, atol=1e-2)  # it did move
    x = torch.arange(W, dtype=torch.float64).view(1, W).expand(H, W)
    y = torch.arange(H, dtype=torch.float64).view(H, 1).expand(H, W)
    for i in range(batch):
        bright = out["image"][i, 0] > 0.5
        assert bright.sum() > 30
        a, b, d = moved[i, 0].tolist()
        dist = (a * x + b * y + d).abs()[bright]
        assert dist.max() < 1.2, f"item {i}: bright pixel {float(dist.max()):.2f} px off the transformed line"
        # and the old line is not where the bright pixels are (rotation ≥ a few degrees moves it)
        a0, b0, d0 = lines[i, 0].tolist()
        assert (a0 * x + b0 * y + d0).abs()[bright].max() > 1.0 or abs(a * a0 + b * b0) > 0.999


def test_same_generator_state_same_result_and_intensity_ranges():
    img = torch.rand(4, 1, H, W)
    batch = {"image": img, "lines": _lines(4).float(), "line_valid": torch.ones(4, 1, dtype=torch.bool),
             "location": torch.rand(4)}
    cfg = AugmentConfig()
    one = augment_batch(batch, torch.Generator().manual_seed(3), cfg)
    two = augment_batch(batch, torch.Generator().manual_seed(3), cfg)
    assert torch.equal(one["image"], two["image"]) and torch.equal(one["lines"], two["lines"])
    assert torch.equal(one["location"], batch["location"])
    assert one["image"].shape == img.shape and torch.isfinite(one["image"]).all()
    assert not torch.equal(one["image"], augment_batch(batch, torch.Generator().manual_seed(4), cfg)["image"])


def test_lines_pushed_off_the_image_are_masked():
    near_edge = torch.tensor([[[1.0, 0.0, -(W - 1.0)]]])  # x = W - 1: the last column
    assert lines_cross_image(near_edge, H, W).all()
    cfg = AugmentConfig(rotation_deg=0.0, scale_range=(1.1, 1.1), intensity=False)
    batch = {"image": torch.zeros(1, 1, H, W), "lines": near_edge, "line_valid": torch.ones(1, 1, dtype=torch.bool)}
    out = augment_batch(batch, torch.Generator().manual_seed(0), cfg)
    assert not out["line_valid"].any()
