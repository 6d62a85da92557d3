"""FreeSurfer and SynthSeg segmentations as FreeSurfer writes them (.mgz, every value of
FreeSurferColorLUT.txt that its outputs hold) become the model's tissue classes; a value FreeSurfer
never writes is refused in one line naming it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from SynthBrainLib import ConditionError
from SynthBrainLib.insertion.freesurfer_labels import FREESURFER_LABELS, FREESURFER_TO_SCHEMA, markdown_table
from SynthBrainLib.insertion.segmentations import tissue_in_schema
from SynthBrainLib.outputs.io import read_volume

REPO = Path(__file__).resolve().parent.parent
SCHEMA = ("background", "csf", "gm", "wm", "dgm", "brainstem", "wmh", "tumour", "edema", "gdtumour")
SUBJECT = "freesurfer-subject"


def test_every_value_of_a_real_aparc_a2009s_aseg_is_mapped(realdata):
    seg, affine = read_volume(realdata / SUBJECT / "aparc.a2009s+aseg.mgz")  # straight from .mgz
    values = [int(v) for v in np.unique(seg)]
    assert len(values) == 189, f"the real segmentation holds its 189 values: {len(values)}"
    assert [v for v in values if v not in FREESURFER_TO_SCHEMA] == [], "every value maps to a class"
    tissue = tissue_in_schema(seg, SCHEMA, "freesurfer")
    assert tissue.shape == seg.shape, "the tissue map keeps the segmentation's grid"
    for value, expected in ((62, "dgm"), (31, "csf"), (63, "csf"), (77, "wmh"), (85, "wm"), (253, "wm")):
        assert value in values, f"the real subject holds {value}"
        assert SCHEMA[tissue[seg == value][0]] == expected, f"FreeSurfer {value} becomes {expected}"
    cortex = (seg >= 11100) & (seg <= 12175)
    assert np.all(tissue[cortex] == SCHEMA.index("gm")), "every Destrieux parcel is cortex (gm)"


def test_aseg_dkt_and_synthseg_values_are_mapped():
    aseg = [0, 2, 3, 4, 5, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17, 18, 24, 26, 28, 30, 31, 41, 42, 43, 44, 46, 47]
    aseg += [49, 50, 51, 52, 53, 54, 58, 60, 62, 63, 72, 77, 80, 85, 251, 252, 253, 254, 255]
    dkt = [*range(1002, 1004), *range(1005, 1032), 1034, 1035, *range(2002, 2004), *range(2005, 2032), 2034, 2035]
    synthseg_parc = [*range(1001, 1004), *range(1005, 1036), *range(2001, 2004), *range(2005, 2036)]
    for name, values in (("aseg", aseg), ("aparc.DKTatlas+aseg", dkt), ("SynthSeg --parc", synthseg_parc)):
        assert [v for v in values if v not in FREESURFER_TO_SCHEMA] == [], f"{name} values are mapped"


def test_every_ambiguous_structure_says_why():
    ambiguous = {30, 62, 31, 63, 77, 7, 46, 8, 47, 17, 53, 18, 54, 28, 60, 80}
    missing = [label.first for label in FREESURFER_LABELS if label.first in ambiguous and not label.why]
    assert missing == [], f"ambiguous structures without a reason: {missing}"


def test_a_value_freesurfer_never_writes_is_refused_in_one_line():
    seg = np.full((6, 6, 6), 2, np.int32)
    seg[0, 0, :3] = [1, 40, 118]  # Cerebral-Exterior (never written), the head label Epidermis
    with pytest.raises(ConditionError) as err:
        tissue_in_schema(seg, SCHEMA, "freesurfer")
    assert "1, 40, 118" in str(err.value), f"the values are named: {err.value}"
    assert "\n" not in str(err.value), "one line"


def test_the_docs_table_lists_every_value_as_the_code_maps_it():
    text = (REPO / "docs" / "freesurfer-labels.md").read_text(encoding="utf-8")
    assert markdown_table() in text, (
        "docs/freesurfer-labels.md holds the current table: paste freesurfer_labels.markdown_table() into it"
    )


@pytest.mark.slow
def test_insert_lesions_with_a_real_freesurfer_segmentation_from_mgz(realdata, tmp_path):
    """The issue's command: --tissue aparc.a2009s+aseg.mgz --tissue-labels freesurfer on the real subject."""
    scan_path = realdata / SUBJECT / "norm.mgz"
    scan = nib.load(scan_path)
    seg = np.asanyarray(nib.load(realdata / SUBJECT / "aparc.a2009s+aseg.mgz").dataobj)
    wm = np.argwhere(seg == 2)
    centre = wm[len(wm) // 2]
    ball = np.linalg.norm(np.indices(seg.shape) - centre[:, None, None, None], axis=0) <= 4
    mask = np.where(ball & (seg == 2), 6, 0).astype(np.uint8)
    nib.save(nib.Nifti1Image(mask, scan.affine), tmp_path / "wmh.nii.gz")
    out = tmp_path / "norm_wmh.nii.gz"
    cmd = [sys.executable, "-m", "SynthBrainLib.cli", "insert-lesions", str(scan_path), "--lesions"]
    cmd += [str(tmp_path / "wmh.nii.gz"), "--sequence", "T1", "--model", "label2image-demo", "--seed", "1"]
    cmd += ["--tissue", str(realdata / SUBJECT / "aparc.a2009s+aseg.mgz"), "--tissue-labels", "freesurfer"]
    done = subprocess.run([*cmd, "--quiet", "-o", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-1500:]
    assert done.stderr == "", f"nothing on stderr: {done.stderr}"
    record = json.loads(out.with_name("norm_wmh.json").read_text())["insertion"]
    assert record["tissue"] == "user segmentation (freesurfer)", "the FreeSurfer segmentation was used"
    written = np.asanyarray(nib.load(out).dataobj)
    original = np.asanyarray(scan.dataobj)
    far = np.linalg.norm(np.indices(seg.shape) - centre[:, None, None, None], axis=0) > 4 + 3 + 1.8
    assert np.array_equal(written[far], original[far]), "every voxel beyond the margin is the scan's own"
    assert written[ball & (seg == 2)].mean() < original[ball & (seg == 2)].mean(), "a T1 lesion darkens the WM"
