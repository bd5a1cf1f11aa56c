"""Acceptance: ``planessl inspect`` labels every view right on both heart layouts and on the knee,
also on copies whose series descriptions are removed or misleading (and folders renamed)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pydicom
import pytest

from PlaneSSLLib.dicom.views import hint_from_text
from training_cli.main import main

COHORTS = {
    "heart-kaggle": ("heart", ["--layout", "kaggle"]),
    "heart-ukbb": ("heart", ["--layout", "ukbb"]),
    "knee": ("knee", []),
}


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inspect_phantoms")
    out = {}
    for name, (anatomy, extra) in COHORTS.items():
        target = root / name
        argv = ["phantom", anatomy, "--subjects", "3", "--seed", "11", "--out", str(target), "--quiet", *extra]
        argv += ["--phases", "2"] if anatomy == "heart" else []
        assert main(argv) == 0
        out[name] = target
    return out


def series_folders(root: Path) -> list[Path]:
    return sorted({p.parent for p in root.rglob("*.dcm")})


def truth_from_folder(folder: Path, anatomy: str) -> str:
    label = hint_from_text(folder.name, anatomy=anatomy)
    assert label is not None, f"phantom folder {folder.name} does not name its view"
    return label


def inspect_json(root: Path, capsys, *extra: str) -> dict:
    capsys.readouterr()
    assert main(["inspect", str(root), "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def views_by_folder(report: dict, root: Path) -> dict[str, str | None]:
    got = {}
    for study in report["studies"]:
        for s in study["series"]:
            got[str((root / s["folder"]).resolve())] = s["view"]
    return got


def relabel_copy(src: Path, dst: Path, anatomy: str, mode: str) -> dict[str, str]:
    """Copy a cohort, rewriting series descriptions and folder names; return folder → true view."""
    truth = {}
    folders = series_folders(src)
    labels = ["SAX", "2CH", "3CH", "4CH"] if anatomy == "heart" else ["SAG", "COR", "AX"]
    for i, folder in enumerate(folders):
        view = truth_from_folder(folder, anatomy)
        if mode == "removed":
            new_name, description = f"series_{i:03d}", ""
        else:  # misleading: name and describe it as another view
            wrong = labels[(labels.index(view) + 1) % len(labels)]
            new_name, description = f"{wrong.lower()}_{i:03d}", f"cine {wrong}"
        target = dst / folder.relative_to(src).parent / new_name
        target.mkdir(parents=True, exist_ok=True)
        for f in sorted(folder.glob("*.dcm")):
            ds = pydicom.dcmread(f)
            ds.SeriesDescription = description
            ds.ProtocolName = description
            ds.save_as(target / f.name, enforce_file_format=True)
        truth[str(target.resolve())] = view
    return truth


@pytest.mark.parametrize("name", list(COHORTS))
def test_inspect_labels_every_view(cohorts, capsys, name):
    root = cohorts[name]
    anatomy = COHORTS[name][0]
    report = inspect_json(root, capsys)
    assert len(report["studies"]) == 3
    truth = {str(f.resolve()): truth_from_folder(f, anatomy) for f in series_folders(root)}
    got = views_by_folder(report, root)
    assert got == truth
    assert {st["anatomy"] for st in report["studies"]} == {anatomy}


@pytest.mark.parametrize("name", list(COHORTS))
@pytest.mark.parametrize("mode", ["removed", "misleading"])
def test_inspect_labels_views_without_or_with_wrong_descriptions(cohorts, capsys, tmp_path, name, mode):
    anatomy = COHORTS[name][0]
    truth = relabel_copy(cohorts[name], tmp_path / "copy", anatomy, mode)
    # anatomy is told here: with every name and description gone, a study is still labelled
    report = inspect_json(tmp_path / "copy", capsys, "--anatomy", anatomy)
    assert views_by_folder(report, tmp_path / "copy") == truth
    for study in report["studies"]:
        for s in study["series"]:
            assert s["view_source"] == "geometry"


def test_inspect_guesses_anatomy_without_descriptions(cohorts, capsys, tmp_path):
    for name in ("heart-ukbb", "knee"):
        anatomy = COHORTS[name][0]
        relabel_copy(cohorts[name], tmp_path / name, anatomy, "removed")
        report = inspect_json(tmp_path / name, capsys)
        assert {st["anatomy"] for st in report["studies"]} == {anatomy}


def test_override_file_settles_a_view(cohorts, capsys, tmp_path):
    src = cohorts["heart-kaggle"]
    copy = tmp_path / "c"
    shutil.copytree(src, copy)
    folder = next(f for f in series_folders(copy) if truth_from_folder(f, "heart") == "2CH")
    overrides = tmp_path / "views.yaml"
    overrides.write_text(f"{folder.name}: 3CH\n")
    report = inspect_json(copy, capsys, "--overrides", str(overrides))
    got = views_by_folder(report, copy)
    assert got[str(folder.resolve())] == "3CH"
