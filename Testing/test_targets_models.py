"""On-the-fly pretext targets and the network shapes (issue 3 ground work)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from PlaneSSLLib.data.targets import line_heatmaps, masked_heatmap_mse, pixel_affine, transform_lines  # noqa: E402
from PlaneSSLLib.geometry import ImagePlane, distance_to_line_px, image_line  # noqa: E402
from PlaneSSLLib.models import PlaneSSLNet, UNetConfig  # noqa: E402


def test_heatmaps_match_geometry_distance():
    a = ImagePlane.from_dicom([0, 0, 0], [1, 0, 0, 0, 1, 0], [1.3, 0.9], 40, 56)
    b = ImagePlane.centred([12, 5, 0], [0, 1, 0], [0.2, 0, 0.98], (1, 1), (40, 40))
    line = image_line(a, b)
    lines = torch.tensor([[[line.a, line.b, line.d], [1.0, 0.0, 0.0]]], dtype=torch.float64)
    valid = torch.tensor([[True, False]])
    heat = line_heatmaps(lines, valid, (40, 56), sigma_px=3.0)
    ref = np.exp(-distance_to_line_px(line, (40, 56)) ** 2 / (2 * 9.0))
    np.testing.assert_allclose(heat[0, 0].numpy(), ref, atol=1e-12)
    assert heat[0, 1].abs().max() == 0  # masked channel


def test_rotated_image_has_rotated_lines():
    """Warping the heatmap image and warping the line agree (augmentation consistency)."""
    size = (64, 64)
    line = torch.tensor([[[0.6, 0.8, -40.0]]], dtype=torch.float64)
    valid = torch.ones(1, 1, dtype=torch.bool)
    f64 = torch.float64
    centre = torch.tensor([[31.5, 31.5]], dtype=f64)
    m = pixel_affine(torch.tensor([[1.2, 0.8]], dtype=f64), torch.tensor([0.4], dtype=f64), centre, centre,
                     flip_x=torch.tensor([True]))
    moved = transform_lines(line, m)
    # points on the original line map onto the moved line
    t = torch.linspace(-50, 50, 11, dtype=torch.float64)
    a, b, d = line[0, 0]
    p = torch.stack([-d * a - t * b, -d * b + t * a, torch.ones_like(t)])
    q = m[0] @ p
    a2, b2, d2 = moved[0, 0]
    assert torch.allclose(a2 * q[0] + b2 * q[1] + d2, torch.zeros_like(t), atol=1e-9)
    assert torch.isclose(a2**2 + b2**2, torch.tensor(1.0, dtype=torch.float64))
    heat = line_heatmaps(moved, valid, size, 2.0)
    assert heat.shape == (1, 1, 64, 64) and heat.max() > 0.9


def test_masked_mse_ignores_invalid_channels():
    pred = torch.zeros(2, 3, 8, 8, requires_grad=True)
    target = torch.ones(2, 3, 8, 8)
    valid = torch.tensor([[True, False, False], [False, False, False]])
    loss = masked_heatmap_mse(pred, target, valid)
    assert loss.item() == pytest.approx(1.0)
    loss.backward()
    assert pred.grad[0, 1].abs().sum() == 0 and pred.grad[1].abs().sum() == 0
    none = masked_heatmap_mse(pred, target, torch.zeros(2, 3, dtype=torch.bool))
    assert none.item() == 0.0


def test_network_shapes_and_reference_config():
    cfg = UNetConfig(base_filters=4, levels=3, line_channels=3)
    net = PlaneSSLNet(cfg)
    out = net(torch.zeros(2, 1, 32, 48))
    assert out["lines"].shape == (2, 3, 32, 48) and out["location"].shape == (2,)
    with pytest.raises(ValueError, match="divisible"):
        net(torch.zeros(1, 1, 30, 32))
    ref = UNetConfig.reference()
    assert ref.filters == [64, 128, 256, 512, 1024] and ref.levels == 5
