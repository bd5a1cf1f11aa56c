"""Weight transfer from a pretrained export: all but the last layer, encoder only, clear mismatches."""

from __future__ import annotations

import pytest
import torch

from PlaneSSLLib.inference.weights import build_manifest, export_weights
from PlaneSSLLib.models import PlaneSSLNet, UNetConfig
from PlaneSSLLib.training.transfer import TransferError, load_pretrained, transfer_state


def _pretrained(tmp_path, **kw) -> tuple[PlaneSSLNet, object]:
    cfg = UNetConfig(base_filters=4, levels=3, line_channels=kw.pop("line_channels", 4), location_hidden=8, **kw)
    torch.manual_seed(1)
    net = PlaneSSLNet(cfg)
    for buf in net.buffers():  # non-default BatchNorm statistics, so that copying them shows
        if buf.dtype.is_floating_point:
            buf.add_(torch.rand_like(buf))
    lines = cfg.line_channels > 0  # no line heatmaps: a location-only pretraining, as the trainer exports it
    manifest = build_manifest(cfg, "both" if lines else "location", views={"SAX": ["2CH", "3CH", "4CH"]},
                              channels=["2CH", "3CH", "4CH", "SAX"] if lines else [],
                              input_size_hw=(64, 64), input_spacing_mm=3.0)
    return net, export_weights(net, tmp_path / "pre", manifest)


def _seg_net(**kw) -> PlaneSSLNet:
    torch.manual_seed(2)
    return PlaneSSLNet(UNetConfig(base_filters=kw.get("base_filters", 4), levels=3, line_channels=4,
                                  location_head=False))


def test_encoder_and_decoder_copied_except_last_layer(tmp_path):
    pre, path = _pretrained(tmp_path)
    seg = _seg_net()
    fresh = {k: v.clone() for k, v in seg.state_dict().items()}
    report = load_pretrained(seg, path, "encoder+decoder")
    src, dst = pre.state_dict(), seg.state_dict()
    assert report.kept == ["decoder.head.weight", "decoder.head.bias"]
    for key, value in dst.items():
        if key.startswith("decoder.head."):
            assert torch.equal(value, fresh[key]), key  # the last layer keeps its initialisation
        else:
            assert torch.equal(value, src[key]), key  # everything else, BatchNorm statistics included
    assert not any(k.startswith("location.") for k in report.copied)


def test_encoder_only(tmp_path):
    pre, path = _pretrained(tmp_path)
    seg = _seg_net()
    fresh = {k: v.clone() for k, v in seg.state_dict().items()}
    report = load_pretrained(seg, path, "encoder")
    src = pre.state_dict()
    for key, value in seg.state_dict().items():
        expected = src[key] if key.startswith("encoder.") else fresh[key]
        assert torch.equal(value, expected), key
    assert all(k.startswith("encoder.") for k in report.copied) and report.copied


def test_mismatched_architecture_is_a_clear_error(tmp_path):
    _, path = _pretrained(tmp_path)
    with pytest.raises(TransferError, match="base_filters 4 vs 8"):
        load_pretrained(_seg_net(base_filters=8), path)
    state = PlaneSSLNet(UNetConfig(base_filters=8, levels=3, line_channels=4)).state_dict()
    with pytest.raises(TransferError, match="shape mismatch"):
        transfer_state(_seg_net(), state, "encoder", "w.safetensors")
    with pytest.raises(TransferError, match="no such file"):
        load_pretrained(_seg_net(), tmp_path / "nowhere")


def test_location_only_pretraining_transfers_encoder_only(tmp_path):
    _, path = _pretrained(tmp_path, line_channels=0)
    with pytest.raises(TransferError, match="no decoder"):
        load_pretrained(_seg_net(), path, "encoder+decoder")
    assert load_pretrained(_seg_net(), path, "encoder").copied
