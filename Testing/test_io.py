"""NIfTI / NRRD writing and reading: geometry, SYNTHETIC marking, provenance, no overwrite, atomicity."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from SynthBrainLib.errors import OutputError
from SynthBrainLib.outputs.io import read_volume, sidecar_path, write_volume
from SynthBrainLib.outputs.results import SynthesisResult


def _oblique_affine():
    angle = np.deg2rad(20)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([0.9, 1.1, 2.5])
    affine[:3, 3] = [-40.5, 12.25, -7.0]
    return affine


PROV = {"synthetic": True, "model": {"id": "tiny"}, "seed": 7}


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd"])
def test_image_geometry_round_trip(tmp_path, suffix):
    rng = np.random.default_rng(0)
    image = rng.random((7, 9, 5), dtype=np.float32)
    affine = _oblique_affine()
    path = tmp_path / f"img{suffix}"
    written = write_volume(path, image, affine, PROV)
    assert written == [path, sidecar_path(path)]
    back, back_affine = read_volume(path)
    assert back.dtype == np.float32, f"the image reads back as float32: {back.dtype}"
    assert back.shape == image.shape, f"the image reads back in its shape: {back.shape}"
    assert np.allclose(back, image), "the voxel values round-trip"
    assert np.allclose(back_affine, affine, atol=1e-5), "the oblique affine round-trips"
    record = json.loads(sidecar_path(path).read_text())
    assert record["synthetic"] is True, "the sidecar marks the volume synthetic"
    assert record["seed"] == 7, f"the sidecar records the seed: {record['seed']}"
    assert record["file"] == path.name, f"the sidecar names its volume: {record['file']}"
    assert len(record["sha256_of_data"]) == 64, f"the sidecar holds a sha256: {record['sha256_of_data']}"


def test_nifti_marks_synthetic_and_embeds_provenance(tmp_path):
    path = tmp_path / "brain.nii.gz"
    write_volume(path, np.zeros((4, 4, 4), np.float32), np.eye(4), PROV)
    img = nib.load(str(path))
    assert img.header["descrip"].tobytes().decode().startswith("SYNTHETIC tiny seed=7")
    comments = [e for e in img.header.extensions if e.get_code() == 6]
    assert json.loads(comments[0].get_content())["synthetic"] is True
    assert img.header.get_xyzt_units()[0] == "mm"


def test_nrrd_marks_synthetic(tmp_path):
    path = tmp_path / "brain.nrrd"
    write_volume(path, np.zeros((4, 4, 4), np.float32), np.eye(4), PROV)
    image = sitk.ReadImage(str(path))
    assert image.GetMetaData("SynthBrain.Synthetic") == "true"
    assert json.loads(image.GetMetaData("SynthBrain.Provenance"))["model"]["id"] == "tiny"


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_labels_are_uint8_and_partial_volumes_4d(tmp_path, suffix):
    labels = np.arange(60, dtype=np.int64).reshape(3, 4, 5) % 10
    pv = np.eye(10, dtype=np.float32)[labels].transpose(3, 0, 1, 2)
    affine = _oblique_affine()
    result = SynthesisResult(
        image=None, affine=affine, provenance=PROV, labels=labels.astype(np.uint8), partial_volumes=pv
    )
    written = result.save(tmp_path / f"labels{suffix}", partial_volumes=tmp_path / f"pv{suffix}")
    assert [p.name for p in written] == [f"labels{suffix}", f"pv{suffix}", "labels.json", "pv.json"]
    back, back_affine = read_volume(tmp_path / f"labels{suffix}")
    assert back.dtype == np.uint8, f"labels read back as uint8: {back.dtype}"
    assert np.array_equal(back, labels), "the label values round-trip"
    assert np.allclose(back_affine, affine, atol=1e-5), "the label map's affine round-trips"
    pv_back, _ = read_volume(tmp_path / f"pv{suffix}")
    assert pv_back.shape == pv.shape, f"partial volumes read back 4D: {pv_back.shape}"
    assert np.allclose(pv_back, pv), "the partial volumes round-trip"


def test_existing_files_are_never_overwritten(tmp_path):
    path = tmp_path / "a.nii.gz"
    write_volume(path, np.zeros((3, 3, 3), np.float32), np.eye(4), PROV)
    before = path.read_bytes()
    with pytest.raises(OutputError, match="a.nii.gz already exists; pass overwrite=True"):
        write_volume(path, np.ones((3, 3, 3), np.float32), np.eye(4), PROV)
    assert path.read_bytes() == before
    # the sidecar alone existing also blocks the write
    other = tmp_path / "b.nii.gz"
    sidecar_path(other).write_text("{}")
    with pytest.raises(OutputError, match="b.json already exists"):
        write_volume(other, np.zeros((3, 3, 3), np.float32), np.eye(4), PROV)
    assert not other.exists()
    write_volume(path, np.ones((3, 3, 3), np.float32), np.eye(4), PROV, overwrite=True)
    assert np.all(read_volume(path)[0] == 1)


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    import SynthBrainLib.outputs.io as sio

    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(sio, "_nifti_bytes_to", explode)
    with pytest.raises(RuntimeError, match="disk full"):
        write_volume(tmp_path / "x.nii.gz", np.zeros((3, 3, 3), np.float32), np.eye(4), PROV)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_get_the_usual_permissions(tmp_path, umask):
    """Atomic writes go through a temporary file; mkstemp's 0600 must not leak into the result."""
    import os
    import stat

    from SynthBrainLib.outputs.preview import write_png

    old = os.umask(umask)
    try:
        data, side = write_volume(tmp_path / "x.nii.gz", np.zeros((3, 3, 3), np.float32), np.eye(4), PROV)
        png = write_png(tmp_path / "x.png", np.zeros((4, 5), np.uint8))
    finally:
        os.umask(old)
    for path in (data, side, png):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path


@pytest.mark.parametrize("name", ["out.png", "out.mgz", "out"])
def test_bad_output_extension(tmp_path, name):
    with pytest.raises(OutputError, match="must end in .nii.gz, .nii, .nrrd"):
        write_volume(tmp_path / name, np.zeros((3, 3, 3), np.float32), np.eye(4), PROV)
    assert list(tmp_path.iterdir()) == []


def test_read_volume_errors(tmp_path):
    from SynthBrainLib.errors import SynthBrainError

    with pytest.raises(SynthBrainError, match="does not exist"):
        read_volume(tmp_path / "none.nii.gz")
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a nifti")
    with pytest.raises(SynthBrainError, match="cannot read"):
        read_volume(bad)
    with pytest.raises(SynthBrainError, match="must be NIfTI"):
        (tmp_path / "x.png").write_bytes(b"x")
        read_volume(tmp_path / "x.png")


def test_nrrd_and_nifti_agree_in_itk(tmp_path):
    """Independent check of the RAS/LPS handling: ITK reads our NIfTI (its own conversion) and our NRRD."""
    image = np.random.default_rng(1).random((6, 8, 5), dtype=np.float32)
    affine = _oblique_affine()
    write_volume(tmp_path / "a.nii.gz", image, affine, PROV)
    write_volume(tmp_path / "b.nrrd", image, affine, PROV)
    a, b = sitk.ReadImage(str(tmp_path / "a.nii.gz")), sitk.ReadImage(str(tmp_path / "b.nrrd"))
    assert np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4)
    assert np.allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-5)
    assert np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-5)
    assert np.array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))
    # and the physical point of voxel (1, 2, 3) is the affine's, in LPS
    ras = affine @ np.array([1, 2, 3, 1.0])
    assert np.allclose(b.TransformIndexToPhysicalPoint((1, 2, 3)), [-ras[0], -ras[1], ras[2]], atol=1e-4)


@pytest.mark.parametrize("spacing, zoom", [(2.5, 3), (2.0, 2), (1.0, 1), (0.7, 1), (1.4, 1)])
def test_preview_zoom_brings_pixels_near_one_mm(spacing, zoom):
    from SynthBrainLib.outputs.preview import montage, preview_zoom

    affine = _oblique_affine()
    affine[:3, :3] = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0) * spacing
    assert preview_zoom(affine) == zoom
    assert montage([np.zeros((4, 5, 6), np.float32)], zoom=zoom, gap=0).shape == (6 * zoom, (4 + 4 + 5) * zoom)


def _without_geometry(path):
    """A NIfTI as some tools write it: qform and sform codes 0, pixdim 0 (no orientation at all)."""
    labels = np.zeros((12, 12, 12), np.uint8)
    labels[3:9, 3:9, 3:9] = 3
    img = nib.Nifti1Image(labels, None)
    img.header.set_qform(None, code=0)
    img.header.set_sform(None, code=0)
    img.header["pixdim"][1:4] = 0
    nib.save(img, str(path))
    return path


def test_a_nifti_without_orientation_is_refused_in_one_line(tmp_path):
    from SynthBrainLib.errors import SynthBrainError

    path = _without_geometry(tmp_path / "nogeometry.nii.gz")
    with pytest.raises(SynthBrainError) as err:
        read_volume(path)
    message = str(err.value)
    assert "no orientation" in message and "qform and sform codes are both 0" in message, message
    assert "\n" not in message, "one line"


def test_the_cli_refuses_a_geometry_free_label_map_with_one_line_and_writes_nothing(tmp_path):
    import subprocess
    import sys

    path = _without_geometry(tmp_path / "nogeometry.nii.gz")
    out = tmp_path / "out" / "image.nii.gz"
    cmd = [sys.executable, "-m", "SynthBrainLib.cli", "image-from-labels", str(path), "--model", "label2image-demo"]
    done = subprocess.run([*cmd, "--quiet", "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, f"refused: {done.returncode} {done.stderr}"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, f"exactly one line on stderr (no reader's own warning): {done.stderr!r}"
    assert "no orientation" in lines[0], lines[0]
    assert not out.parent.exists() or not any(out.parent.iterdir()), "nothing written"


def test_freesurfer_mgz_reads_with_its_own_geometry(tmp_path):
    labels = np.zeros((10, 11, 12), np.int32)
    labels[2:5, 3:6, 4:7] = 17
    affine = np.array([[-1.0, 0, 0, 5], [0, 0, 1, -6], [0, -1, 0, 7], [0, 0, 0, 1]])  # FreeSurfer's LIA
    nib.save(nib.MGHImage(labels, affine), str(tmp_path / "aseg.mgz"))
    back, back_affine = read_volume(tmp_path / "aseg.mgz")
    assert np.array_equal(back, labels), "the values read back"
    assert np.allclose(back_affine, affine), f"the voxel-to-RAS matrix reads back: {back_affine}"
