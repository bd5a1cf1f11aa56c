"""Untrusted sizes never allocate without bound (issue 15, finding 9).

A PixelSpacing of 1e-9 mm made resampling build a 45 GiB anti-aliasing kernel; a training config
naming 40 levels, 2**20 base filters or 60000-pixel images built (or tried to build) the network
before any check. Each is now refused with a message naming the file or key.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pydicom
import pytest
from training_helpers import TINY

from PlaneSSLLib.errors import ConfigError
from PlaneSSLLib.geometry.planes import ImagePlane
from PlaneSSLLib.phantoms import CohortOptions, write_cohort
from PlaneSSLLib.training.config import config_from_dict
from training_cli.main import main


@pytest.mark.parametrize("spacing", [1e-9, 1e-4, 1e6])
def test_absurd_pixel_spacing_is_unusable_geometry(spacing):
    with pytest.raises(ValueError, match="outside 0.001..1000 mm"):
        ImagePlane((0, 0, 0), (1, 0, 0), (0, 1, 0), (spacing, 1.0), (8, 8))
    ImagePlane((0, 0, 0), (1, 0, 0), (0, 1, 0), (0.2, 5.0), (8, 8))  # real scanners' range stays usable


def test_a_study_with_nanometre_pixels_is_named_not_resampled(tmp_path, capsys):
    root = tmp_path / "c"
    write_cohort(root, CohortOptions("heart", subjects=1, seed=3, phases=2, matrix=48), workers=1)
    study = root / "subject_0000" / "study"
    for f in sorted(study.rglob("*.dcm")):
        ds = pydicom.dcmread(f)
        ds.PixelSpacing = [1e-9, 1e-9]
        ds.save_as(f)
    code = main(["prepare", str(study), "--out", str(tmp_path / "cache"), "--size", "32", "--spacing", "4"])
    err = capsys.readouterr().err
    assert code == 1 and "no usable image" in err and "Traceback" not in err
    main(["inspect", str(study)])
    assert "pixel spacing 1e-09 x 1e-09 mm is outside" in capsys.readouterr().out
    shutil.rmtree(root)


@pytest.mark.parametrize("section,key,value,message", [
    ("model", "levels", 40, "model.levels: must be at most 8"),
    ("model", "base_filters", 2 ** 20, "model.base_filters: 1048576 with"),
    ("model", "location_hidden", 2 ** 30, "model.location_hidden: must be at most"),
    ("data", "image_size", 60000, "data.image_size: must be at most 4096"),
])
def test_huge_networks_and_images_in_a_config_are_refused(section, key, value, message):
    raw = copy.deepcopy(TINY)
    raw.setdefault(section, {})[key] = value
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        config_from_dict(raw, "c.yaml")


def test_the_config_bounds_are_the_networks():
    from PlaneSSLLib.models import unet
    from PlaneSSLLib.training import config

    assert (config.MAX_LEVELS, config.MAX_DEEPEST_FILTERS, config.MAX_CHANNELS) == (
        unet.MAX_LEVELS, unet.MAX_DEEPEST_FILTERS, unet.MAX_CHANNELS)
    from PlaneSSLLib.inference.manifest import MAX_SIZE_PX

    assert config.MAX_IMAGE_SIZE_PX == MAX_SIZE_PX


def test_a_manifest_naming_a_huge_location_head_is_refused_before_building(tmp_path):
    from test_weights_contract import _manifest

    from PlaneSSLLib.inference.manifest import validate_manifest
    from PlaneSSLLib.inference.weights import WeightsError

    manifest = _manifest("both")
    manifest["architecture"]["config"]["location_hidden"] = 2 ** 30
    with pytest.raises(WeightsError, match="location_hidden must be at most"):
        validate_manifest(json.loads(json.dumps(manifest)), str(Path("m.json")), expect_task="both")
