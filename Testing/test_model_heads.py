"""The network's heads beyond the paper's: a heatmap head per input view (``model.view_heads``: the knee's COR
line is vertical in sagittal images and horizontal in axial ones, so one head cannot draw both; the network, its
numpy twin, the manifest, pretraining, the pretext evaluation, ``predict lines`` and the Slicer line predictor all
read an image's lines from its view's head) and a location head that pools the bottleneck per grid cell
(``model.location_pooling: grid``: where a structure lies, not only that it is there)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from PlaneSSLLib.data.prepare import prepare_cache  # noqa: E402
from PlaneSSLLib.inference.unet_numpy import load_numpy_unet  # noqa: E402
from PlaneSSLLib.inference.weights import WeightsError, load_validated  # noqa: E402
from PlaneSSLLib.models import PlaneSSLNet, UNetConfig  # noqa: E402
from PlaneSSLLib.preprocess.codes import VIEW_CODES  # noqa: E402
from PlaneSSLLib.preprocess.config import PrepareConfig  # noqa: E402
from PlaneSSLLib.training.view_heads import batch_heads, head_lookup  # noqa: E402
from training_cli.main import main  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
KNEE = ("SAG", "COR", "AX")


def test_each_image_reads_its_views_head():
    config = UNetConfig(base_filters=4, levels=3, line_channels=3, head_views=KNEE)
    net = PlaneSSLNet(config).eval()
    x = torch.randn(4, 1, 32, 32)
    heads = batch_heads(head_lookup(config), torch.tensor([VIEW_CODES[v] for v in ("SAG", "COR", "AX", "COR")]))
    assert heads.tolist() == [0, 1, 2, 1]
    with torch.no_grad():
        out = net(x, heads)["lines"]
        every = net.decoder(net.encoder(x))  # (B, 3 heads x 3 channels, H, W)
    assert out.shape == (4, 3, 32, 32) and every.shape[1] == 9
    for i, h in enumerate(heads.tolist()):
        assert torch.equal(out[i], every[i, 3 * h:3 * h + 3])
    with pytest.raises(ValueError, match="head index"):
        net(x)
    with pytest.raises(ValueError, match="SAX"):  # a view without a head of its own
        batch_heads(head_lookup(config), torch.tensor([VIEW_CODES["SAX"]]))
    with pytest.raises(ValueError, match="distinct"):
        UNetConfig(head_views=("SAG", "SAG")).validate()
    # one shared head: the record is the one written before heads per view existed
    assert "head_views" not in UNetConfig().to_dict() and config.to_dict()["head_views"] == list(KNEE)


@pytest.fixture(scope="module")
def knee_run(knee_cohort, tmp_path_factory):
    """One epoch of both pretext tasks with a head per view on the shared five-knee cohort (32 px at 5 mm)."""
    root = tmp_path_factory.mktemp("view_heads")
    cache = prepare_cache(knee_cohort, root / "cache", PrepareConfig(spacing_mm=5.0, size_px=32, anatomy="knee"))
    argv = ["pretrain", "--config", str(REPO / "Resources" / "Configs" / "pretrain_demo.yaml"), "--out",
            str(root / "run"), "--set", f"data.cache={cache.cache_dir}", "data.anatomy=knee", "data.image_size=32",
            "data.spacing_mm=5.0", "data.sigma_px=1.0", "model.view_heads=true", "optim.epochs=1",
            "optim.slices_per_subject=2", "runtime.progress=none", "runtime.plot=false"]
    assert main(argv) == 0
    return root / "run", cache.cache_dir


def test_pretraining_exports_a_head_per_knee_view(knee_run):
    run, _ = knee_run
    manifest = json.loads((run / "model" / "manifest.json").read_text())
    assert manifest["architecture"]["config"]["head_views"] == list(KNEE)
    net, validated = load_validated(run / "model", "cpu", expect_task="both")
    assert validated.config.head_views == KNEE and validated.config.head_outputs == 9
    # the numpy twin (planning, Slicer without torch) reads the same head as the torch network
    numpy_net, _ = load_numpy_unet(run / "model", heatmaps_only=True)
    x = np.random.default_rng(0).standard_normal((3, 1, 32, 32)).astype(np.float32)
    heads = np.array([2, 0, 1])
    with torch.no_grad():
        want = net.eval()(torch.from_numpy(x), torch.from_numpy(heads))["lines"].numpy()
    assert np.allclose(numpy_net.logits(x, heads), want, atol=1e-4)
    with pytest.raises(ValueError, match="head index"):
        numpy_net.logits(x)


def test_pretext_eval_and_predict_lines_use_the_image_view(knee_run, knee_cohort, tmp_path, capsys):
    run, _ = knee_run
    assert main(["evaluate-pretext", "--run", str(run), "--out", str(tmp_path / "eval")]) == 0
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["pretrained"]["overall"]["n_images"] > 0 and report["pretrained"]["pairs"]
    # an axial image: its lines come from the AX head (the same numbers as the AX head read by hand)
    from PlaneSSLLib.inference.predict_lines import predict_image_lines
    from PlaneSSLLib.slicer_logic.lines import ManifestLinePredictor

    image = sorted((knee_cohort / "subject_0000").rglob("*.dcm"))
    axial = next(p for p in image if "ax" in p.parent.name.lower())
    result = predict_image_lines(run / "model", axial, view="AX")
    assert result["view"] == "AX" and {p["view"] for p in result["partners"]} == {"SAG", "COR"}
    predictor = ManifestLinePredictor.from_weights(run / "model")
    import pydicom

    from PlaneSSLLib.dicom.planes import plane_from_dataset

    ds = pydicom.dcmread(axial)
    pixels, plane = ds.pixel_array.astype(np.float32), plane_from_dataset(ds, 0)
    own, _ = predictor.heatmaps_prepared(pixels, plane, "AX")
    sag, _ = predictor.heatmaps_prepared(pixels, plane, "SAG")
    assert not np.allclose(own, sag)  # two heads, two answers
    with pytest.raises(ValueError, match="view is needed"):
        predictor.heatmaps_prepared(pixels, plane)


def test_head_views_must_be_input_views(knee_run, tmp_path):
    import shutil

    run, _ = knee_run
    bad = tmp_path / "w"
    shutil.copytree(run / "model", bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["architecture"]["config"]["head_views"] = ["SAG", "COR", "SAX"]
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(WeightsError, match="head_views"):
        load_validated(bad, "cpu")


def test_a_head_per_view_transfers_to_segmentation_like_one_head():
    from PlaneSSLLib.training.transfer import transfer_state

    lines = PlaneSSLNet(UNetConfig(base_filters=4, levels=3, line_channels=3, head_views=KNEE))
    seg = PlaneSSLNet(UNetConfig(base_filters=4, levels=3, line_channels=4, location_head=False))
    report = transfer_state(seg, lines.state_dict(), "encoder+decoder")
    assert "decoder.head.weight" in report.kept and "decoder.blocks.0.0.weight" in report.copied


def test_grid_pooling_keeps_where_a_feature_lies():
    from PlaneSSLLib.inference.unet_numpy import unet_state_shapes
    from PlaneSSLLib.models.unet import LocationHead

    config = UNetConfig(base_filters=4, levels=3, location_hidden=8, location_pooling="grid")
    state = PlaneSSLNet(config).state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == {k: s for k, (s, _) in unet_state_shapes(config).items()}
    assert config.to_dict()["location_pooling"] == "grid" and "location_pooling" not in UNetConfig().to_dict()
    # the same feature in the left or the right half: global pooling cannot tell them apart, grid pooling can
    left, right = torch.zeros(1, 16, 8, 8), torch.zeros(1, 16, 8, 8)
    left[..., 2, 1], right[..., 2, 6] = 1.0, 1.0
    torch.manual_seed(0)
    mean_head, grid_head = LocationHead(16, 8, "mean"), LocationHead(16, 8, "grid")
    with torch.no_grad():
        assert torch.equal(mean_head(left), mean_head(right)) and not torch.equal(grid_head(left), grid_head(right))
    with pytest.raises(ValueError, match="location_pooling"):
        UNetConfig(location_pooling="max").validate()


@pytest.mark.parametrize("setting, message", [("model.location_pooling=max", "'grid'"),
                                              ("model.view_heads=true", "two or more views")])
def test_network_options_the_data_cannot_serve_are_config_errors(setting, message, tmp_path, capsys):
    argv = ["pretrain", "--config", str(REPO / "Resources" / "Configs" / "pretrain_demo.yaml"), "--out",
            str(tmp_path / "run"), "--set", "data.source=synthetic", setting]  # synthetic shapes: no views
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert setting.split("=")[0] in err and message in err and "Traceback" not in err
    assert not (tmp_path / "run" / "checkpoints").exists()
