"""Exam classifier shapes and padding, slice pooling, per-stack augmentation, slice subsets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from PlaneSSLLib.data.augment import AugmentConfig
from PlaneSSLLib.data.exams import ExamDataset, augment_stack, collate_exams, slice_subset
from PlaneSSLLib.models.exam_classifier import ExamClassifier, ExamClassifierConfig
from PlaneSSLLib.models.unet import UNetConfig
from PlaneSSLLib.preprocess.exams import Exam

ENC = UNetConfig(base_filters=4, levels=3, line_channels=0, location_head=False)


def _exam(counts: dict[str, int], size: int = 16, label: int = 0, seed: int = 0) -> Exam:
    rng = np.random.default_rng(seed)
    return Exam(key=f"k{seed}", stacks={v: rng.random((n, size, size), dtype=np.float32) for v, n in counts.items()},
                label=label)


@pytest.mark.parametrize("pooling", ["max", "attention"])
def test_variable_slice_counts_and_padding_do_not_change_the_output(pooling):
    torch.manual_seed(0)
    model = ExamClassifier(ExamClassifierConfig(encoder=ENC, pooling=pooling, hidden=8)).eval()
    a = _exam({"SAG": 5, "COR": 3, "AX": 4}, seed=1)
    b = _exam({"SAG": 2, "COR": 6, "AX": 1}, seed=2)
    ds = ExamDataset([a, b])
    batch = collate_exams([ds[0], ds[1]])
    assert batch["stacks"]["SAG"].shape == (2, 5, 16, 16) and batch["masks"]["COR"].sum().item() == 9
    with torch.no_grad():
        both = model(batch["stacks"], batch["masks"])
        alone = model(collate_exams([ds[1]])["stacks"])
    assert both.shape == (2,)
    assert both[1].item() == pytest.approx(alone[0].item(), abs=1e-5)  # padding never contributes


def test_attention_weights_ignore_padding_and_shapes_are_checked():
    model = ExamClassifier(ExamClassifierConfig(encoder=ENC, pooling="attention"))
    feats = torch.rand(2, 4, ENC.filters[-1])
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    w = model.pooling["SAG"].weights(feats, mask)
    assert torch.allclose(w.sum(1), torch.ones(2)) and (w[0, 2:] == 0).all()
    with pytest.raises(ValueError, match="missing view"):
        model({"SAG": torch.rand(1, 2, 16, 16)})
    with pytest.raises(ValueError, match="divisible"):
        model.slice_features(torch.rand(2, 15, 15))


def test_encoder_is_shared_and_loadable_from_a_planessl_net():
    from PlaneSSLLib.models import PlaneSSLNet

    net = PlaneSSLNet(UNetConfig(base_filters=4, levels=3, line_channels=3))
    model = ExamClassifier(ExamClassifierConfig(encoder=ENC))
    model.load_encoder_state(net.encoder.state_dict())
    for k, v in net.encoder.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[k], v)
    assert not any(k.startswith("pooling.") for k, _ in model.named_parameters())  # max pooling: no weights
    cfg = ExamClassifierConfig.from_dict(model.config.to_dict())
    assert cfg == model.config


def test_augment_stack_applies_one_transform_to_every_slice():
    base = torch.rand(1, 24, 24)
    stack = base.expand(5, 24, 24).clone()
    gen = torch.Generator().manual_seed(0)
    out = augment_stack(stack, gen, AugmentConfig(rotation_deg=30, noise_std=(0.0, 0.0), flip_prob=0.5))
    assert out.shape == stack.shape
    assert not torch.allclose(out[0], base[0])
    for i in range(1, 5):
        assert torch.allclose(out[i], out[0], atol=1e-6)
    again = augment_stack(stack, torch.Generator().manual_seed(0), AugmentConfig(rotation_deg=30,
                                                                                noise_std=(0.0, 0.0), flip_prob=0.5))
    assert torch.equal(out, again)


def test_slice_subset():
    assert slice_subset(5, 0, None).tolist() == [0, 1, 2, 3, 4]
    centred = slice_subset(30, 6, None)
    assert len(centred) == 6 and centred.tolist() == sorted(set(centred.tolist()))
    rnd = slice_subset(30, 6, np.random.default_rng(0))
    assert len(rnd) == 6 and rnd.max() < 30


def test_spatial_pooling_takes_the_mean_or_the_maximum_over_the_bottleneck():
    torch.manual_seed(0)
    slices = torch.rand(3, 16, 16)
    mean = ExamClassifier(ExamClassifierConfig(encoder=ENC)).eval()
    peak = ExamClassifier(ExamClassifierConfig(encoder=ENC, spatial_pooling="max")).eval()
    peak.load_state_dict(mean.state_dict())  # same weights: only the pooling differs
    with torch.no_grad():
        bottleneck = mean.encoder(slices.unsqueeze(1))[-1]
        assert torch.allclose(mean.slice_features(slices), bottleneck.mean(dim=(2, 3)))
        assert torch.allclose(peak.slice_features(slices), bottleneck.amax(dim=(2, 3)))
        assert not torch.allclose(mean.slice_features(slices), peak.slice_features(slices))
    assert ExamClassifierConfig.from_dict(peak.config.to_dict()).spatial_pooling == "max"
    old = mean.config.to_dict()
    del old["spatial_pooling"]  # a manifest written before the option existed: the mean, as then
    assert ExamClassifierConfig.from_dict(old).spatial_pooling == "mean"
    with pytest.raises(ValueError, match="spatial_pooling must be one of mean, max"):
        ExamClassifierConfig(encoder=ENC, spatial_pooling="sum").validate()
