"""Knee sagittal location runs medial -> lateral for left and right knees alike."""

from __future__ import annotations

import numpy as np

from PlaneSSLLib.data.cache import open_cache
from PlaneSSLLib.data.prepare import prepare_cache
from PlaneSSLLib.dicom.scan import scan_tree
from PlaneSSLLib.preprocess.codes import VIEW_CODES
from PlaneSSLLib.preprocess.config import PrepareConfig


def test_sagittal_location_is_medial_to_lateral(knee_cohort, tmp_path):
    scan = scan_tree(knee_cohort)
    laterality = {st.patient_key: {s.laterality for s in st.series} for st in scan.studies}
    assert all(len(v) == 1 for v in laterality.values())
    sides = {next(iter(v)) for v in laterality.values()}
    assert sides == {"L", "R"}, "the seed should give both knees"
    cache = open_cache(prepare_cache(knee_cohort, tmp_path / "cache", PrepareConfig(spacing_mm=2.0, size_px=48))
                       .cache_dir)
    index = cache.index
    sag = index["view"] == VIEW_CODES["SAG"]
    for subject, key in enumerate(cache.subject_keys):
        rows = np.flatnonzero(sag & (index["subject"] == subject))
        x = index["origin_lps"][rows][:, 0]  # patient left is +x (LPS)
        loc = index["location"][rows]
        lateral_is_left = next(iter(laterality[key])) == "L"
        slope = np.polyfit(loc, x, 1)[0]
        assert (slope > 0) == lateral_is_left, f"subject {subject}: location must grow towards the lateral side"
