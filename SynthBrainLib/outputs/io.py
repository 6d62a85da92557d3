"""Reading label maps and writing synthetic volumes (NIfTI with nibabel, NRRD with SimpleITK).

Arrays are indexed [i, j, k] (optionally with a leading channel axis) and come with a 4x4 affine
mapping voxel indices to RAS millimetres, the NIfTI convention. NRRD stores LPS: we convert.

Every written volume is marked synthetic (NIfTI ``descrip`` starts with ``SYNTHETIC``; NRRD key
``SynthBrain.Synthetic:=true``), embeds its provenance (NIfTI comment extension, NRRD key
``SynthBrain.Provenance``) and gets a provenance JSON sidecar. Files are written to a temporary
name in the target folder and renamed into place, so a crash never leaves a half-written file, and
an existing file is never replaced unless ``overwrite`` is set.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..errors import OutputError, Remedy, SynthBrainError
from .atomic_files import AlreadyExists, place, remove_stale_temporaries, temporary_sibling
from .digests import file_sha256

NIFTI_SUFFIXES = (".nii.gz", ".nii")
NRRD_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
#: FreeSurfer's MGH format (read with nibabel; FreeSurfer writes its segmentations and volumes so).
MGH_SUFFIXES = (".mgz", ".mgh")
#: Every volume format read_volume takes, for messages.
READABLE = "NIfTI (.nii, .nii.gz), NRRD/MetaImage (.nrrd, .nhdr, .mha, .mhd) or FreeSurfer MGH (.mgz, .mgh)"
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def volume_suffix(path: str | Path) -> str:
    name = str(path).lower()
    for suffix in NIFTI_SUFFIXES + NRRD_SUFFIXES + MGH_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return ""


def as_path(path: Any, what: str) -> Path:
    """``path`` as a Path, or a one-line error for a value that is no path (a number, None, ...)."""
    if not isinstance(path, (str, os.PathLike)) or not str(path) or "\x00" in str(path):
        raise OutputError(f"{what} {path!r} is not a file path")
    return Path(path)


def check_output_path(path: str | Path, writable=(".nii.gz", ".nii", ".nrrd")) -> Path:
    """Validate an output file name; returns it as a Path."""
    path = as_path(path, "output file")
    size = len(os.fsencode(path.name))  # as the file system sees it (undecodable bytes included)
    if size > 240:  # most file systems stop at 255 bytes; temporaries add a few
        raise OutputError(f"output file name {path.name[:40]!r}... is {size} bytes long; at most 240 are allowed")
    if volume_suffix(path) not in writable:
        raise OutputError(f"output file {str(path)!r} must end in {', '.join(writable)}")
    return path


def sidecar_path(path: str | Path) -> Path:
    """``brain.nii.gz`` -> ``brain.json``: where the provenance record goes."""
    path = Path(path)
    suffix = volume_suffix(path)
    stem = path.name[: -len(suffix)] if suffix else path.stem
    return path.with_name(stem + ".json")


def ensure_writable(paths: Iterable[Path], overwrite: bool) -> None:
    """Refuse, before any work is done, outputs that cannot or must not be written.

    Existing files (unless ``overwrite``), folders in the way, two outputs on the same file (say,
    a label map and its partial volumes sharing one sidecar), and folders that cannot be created
    or written to. Checked up front so that a long synthesis does not end in a write error.
    """
    if not isinstance(overwrite, bool):
        raise OutputError(f"overwrite {overwrite!r} is not True or False")
    try:
        _ensure_writable(paths, overwrite)
    except OSError as exc:  # a path the system refuses to even look at (too long, a loop of links)
        raise OutputError(f"cannot use {exc.filename or 'the output path'}: {exc.strerror or exc}") from None


def _ensure_writable(paths: Iterable[Path], overwrite: bool) -> None:
    seen: dict[Path, Path] = {}
    for p in map(Path, paths):
        key = p.resolve()
        if key in seen:
            raise OutputError(f"two outputs would be written to {p}; give them different names")
        seen[key] = p
        if p.is_dir():
            raise OutputError(f"{p} is a folder, not a file")
        if os.path.lexists(p) and not overwrite:  # lexists: a dangling symlink is something too
            raise OutputError(f"{p} already exists", remedy=Remedy("overwrite"))
        _check_folder_writable(p.parent)


def _check_folder_writable(folder: Path) -> None:
    existing = folder.absolute()
    while not existing.exists():  # the nearest ancestor that exists must take the new folders
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"cannot write into {folder}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write into {folder}: no write permission for {existing}")


def _write_error(path: Path, exc: OSError) -> OutputError:
    return OutputError(f"cannot write {path}: {exc.strerror or exc}")


def output_paths(
    path: str | Path, *, partial_volumes: str | Path | None = None, labels: str | Path | None = None
) -> list[Path]:
    """All files a result save will create (data files, then JSON sidecars)."""
    data = [check_output_path(path)]
    for extra in (partial_volumes, labels):
        if extra is not None:
            data.append(check_output_path(extra))
    if len({p.resolve() for p in data}) < len(data):
        raise OutputError(f"output files must differ: {', '.join(str(p) for p in data)}")
    return data + [sidecar_path(p) for p in data]


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------
def _tmp_name(dest: Path) -> Path:
    return temporary_sibling(dest, suffix=volume_suffix(dest) or ".tmp")


def _nifti_bytes_to(
    path: Path, array: np.ndarray, affine: np.ndarray, description: str, provenance: dict, is_label: bool
) -> None:
    import nibabel as nib

    data = array if array.ndim == 3 else np.moveaxis(array, 0, -1)  # channels last in NIfTI
    img = nib.Nifti1Image(data, np.asarray(affine, dtype=np.float64))
    header = img.header
    header.set_xyzt_units("mm")
    header["descrip"] = description.encode("ascii", "replace")[:79]
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    if is_label:
        header.set_intent("label")
    elif array.ndim == 4:
        header.set_intent("vector")
    header.extensions.append(nib.nifti1.Nifti1Extension("comment", json.dumps(provenance).encode("utf-8")))
    nib.save(img, str(path))


def _nrrd_to(path: Path, array: np.ndarray, affine: np.ndarray, description: str, provenance: dict) -> None:
    import SimpleITK as sitk

    if array.ndim == 3:
        image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    else:
        image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(3, 2, 1, 0)), isVector=True)
    lps = _LPS @ np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((lps[:3, :3] / spacing).flatten().tolist())
    image.SetOrigin(lps[:3, 3].tolist())
    image.SetMetaData("SynthBrain.Synthetic", "true")
    image.SetMetaData("SynthBrain.Description", description)
    image.SetMetaData("SynthBrain.Provenance", json.dumps(provenance))
    writer = sitk.ImageFileWriter()
    writer.SetFileName(str(path))
    writer.SetImageIO("NrrdImageIO")
    writer.SetUseCompression(True)
    writer.Execute(image)


def write_volume(
    path: str | Path,
    array: np.ndarray,
    affine: np.ndarray,
    provenance: dict[str, Any],
    *,
    overwrite: bool = False,
    is_label: bool = False,
) -> list[Path]:
    """Write one synthetic volume and its provenance JSON sidecar atomically.

    Args:
        path: ``.nii``, ``.nii.gz`` or ``.nrrd``.
        array: (X, Y, Z) or (C, X, Y, Z). Images are stored as float32 (integer ones keep their type), labels as uint8.
        affine: 4x4 voxel-to-RAS mm.
        provenance: JSON-ready record; stored in the header and in ``<name>.json``.
        overwrite: replace existing files.
        is_label: store as a uint8 label map.

    Returns:
        [data file, sidecar].
    """
    path = check_output_path(path)
    side = sidecar_path(path)
    ensure_writable([path, side], overwrite)
    array = _volume_array(array)
    check_affine(affine, "the volume to write")
    if not isinstance(provenance, dict):
        raise OutputError(f"provenance must be a dict (JSON object), got {type(provenance).__name__}")
    try:
        json.dumps(provenance)
    except (TypeError, ValueError) as exc:
        raise OutputError(f"provenance cannot be written as JSON: {exc}") from None
    if is_label:
        array = array.astype(np.uint8)
    elif not np.issubdtype(array.dtype, np.integer):
        # an integer image is a patient's own scan, edited (lesions inserted or removed, aged): it
        # keeps the scanner's type, so that the edited file reads as the original does
        array = array.astype(np.float32)
    model_id = provenance.get("model", {}).get("id", "?")
    description = f"SYNTHETIC {model_id} seed={provenance.get('seed')} (SynthBrain)"
    tmp_data = tmp_side = placed = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path.parent)  # what killed earlier runs left here (hours old)
        tmp_data = _tmp_name(path)
        tmp_side = _tmp_name(side)
        if volume_suffix(path) in NIFTI_SUFFIXES:
            _nifti_bytes_to(tmp_data, array, affine, description, provenance, is_label)
        else:
            _nrrd_to(tmp_data, array, affine, description, provenance)
        record = dict(provenance, file=path.name, sha256_of_data=file_sha256(tmp_data))
        tmp_side.write_text(json.dumps(record, indent=2), encoding="utf-8")
        # Create-exclusive unless overwriting: a file another process finished since the check
        # above is never replaced (two runs writing one name: exactly one wins).
        place(tmp_data, path, overwrite=overwrite)
        placed = path
        place(tmp_side, side, overwrite=overwrite)
    except BaseException as exc:
        for tmp in (tmp_data, tmp_side):
            if tmp is not None:
                tmp.unlink(missing_ok=True)
        if placed is not None and not overwrite:
            placed.unlink(missing_ok=True)  # ours: its sidecar could not be placed
        if isinstance(exc, AlreadyExists):
            raise OutputError(
                f"{exc.args[0]} (written by another process meanwhile)", remedy=Remedy("overwrite")
            ) from None
        if isinstance(exc, OSError):
            raise _write_error(path, exc) from None
        raise
    return [path, side]


def write_result(
    result,
    path: str | Path,
    *,
    overwrite: bool = False,
    partial_volumes: str | Path | None = None,
    labels: str | Path | None = None,
) -> list[Path]:
    """Save a :class:`~SynthBrainLib.outputs.results.SynthesisResult` (image, or labels for label
    generators); ``labels``: also the label map of a result that has an image (e.g. inserted lesions)."""
    targets = output_paths(path, partial_volumes=partial_volumes, labels=labels)
    ensure_writable(targets, overwrite)
    if partial_volumes is not None and result.partial_volumes is None:
        raise OutputError("this result has no partial volumes to write")
    if labels is not None and (result.labels is None or result.image is None):
        raise OutputError("this result has no label map besides its image to write")
    new = [p for p in targets if not p.exists()]
    written: list[Path] = []
    try:
        if result.image is not None:
            written += write_volume(path, result.image, result.affine, result.provenance, overwrite=overwrite)
        else:
            written += write_volume(
                path, result.labels, result.affine, result.provenance, overwrite=overwrite, is_label=True
            )
        if partial_volumes is not None:
            written += write_volume(
                partial_volumes, result.partial_volumes, result.affine, result.provenance, overwrite=overwrite
            )
        if labels is not None:
            written += write_volume(
                labels, result.labels, result.affine, result.provenance, overwrite=overwrite, is_label=True
            )
    except BaseException:
        for p in written:  # all or nothing: remove what this call created (replaced files stay replaced)
            if p in new:
                p.unlink(missing_ok=True)
        raise
    return sorted(written, key=lambda p: p.suffix == ".json")


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------
def read_volume(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI / NRRD / MetaImage / FreeSurfer MGH volume.

    A NIfTI file whose qform and sform codes are both 0 has no orientation (nibabel would invent a
    1 mm grid for it): it is refused, since a lesion or label placed on an invented grid lands in
    the wrong place.

    Returns:
        (array, affine): array (X, Y, Z) or, for 4D / vector images, (C, X, Y, Z); affine 4x4
        voxel-to-RAS mm.
    """
    try:
        path = as_path(path, "input file")
    except OutputError as exc:
        raise SynthBrainError(str(exc)) from None
    if path.is_dir():
        raise SynthBrainError(f"input {path} is a folder; give a volume file (.nii.gz, .nii, .nrrd, .mha, .mgz)")
    if not path.is_file():
        raise SynthBrainError(f"input file {path} does not exist")
    suffix = volume_suffix(path)
    try:
        with _quiet_readers():
            return _checked(path, *_read(path, suffix))
    except SynthBrainError:
        raise
    except Exception as exc:  # nibabel / ITK raise many types for unreadable files
        raise SynthBrainError(
            f"cannot read {path}: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
        ) from None


@contextmanager
def _quiet_readers():
    """nibabel and ITK report header oddities on the logger and as warnings; a file we refuse gets
    our one line, and one we read needs no extra noise on stderr."""
    import logging
    import warnings

    logger = logging.getLogger("nibabel")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _read(path: Path, suffix: str) -> tuple[np.ndarray, np.ndarray]:
    """The array ([i, j, k] or (C, i, j, k)) and voxel-to-RAS affine of a NIfTI, MGH or NRRD file."""
    if suffix in NIFTI_SUFFIXES + MGH_SUFFIXES:
        import nibabel as nib

        img = nib.load(str(path))
        if suffix in NIFTI_SUFFIXES and not (img.header["qform_code"] or img.header["sform_code"]):
            raise SynthBrainError(
                f"{path} has no orientation (its NIfTI qform and sform codes are both 0), so where its voxels lie "
                "is unknown; save it again from the program that made it (Slicer, ITK-SNAP, mri_convert) with "
                "its orientation"
            )
        array = np.asanyarray(img.dataobj)
        affine = np.asarray(img.affine, dtype=np.float64)
        if array.ndim == 5 and array.shape[3] == 1:
            array = array[:, :, :, 0, :]
        if array.ndim == 4:
            array = np.moveaxis(array, -1, 0)
    elif suffix in NRRD_SUFFIXES:
        import SimpleITK as sitk

        image = sitk.ReadImage(str(path))
        array = sitk.GetArrayFromImage(image)
        array = array.transpose(2, 1, 0) if image.GetNumberOfComponentsPerPixel() == 1 else array.transpose(3, 2, 1, 0)
        spacing = np.asarray(image.GetSpacing())
        lps = np.eye(4)
        lps[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) * spacing
        lps[:3, 3] = image.GetOrigin()
        affine = _LPS @ lps
    else:
        raise SynthBrainError(f"input file {str(path)!r} must be {READABLE}")
    return array, affine


def _checked(path: Path, array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if array.ndim not in (3, 4):
        raise SynthBrainError(f"{path} has {array.ndim} dimensions; expected a 3D volume or 4D partial volumes")
    check_real_array(array, str(path))
    check_affine(affine, str(path))
    return array, affine


def _volume_array(array: Any) -> np.ndarray:
    """A (X, Y, Z) or (C, X, Y, Z) array of real numbers to write, or a one-line error."""
    try:
        array = np.asarray(array)
    except (TypeError, ValueError) as exc:
        raise OutputError(f"the volume to write is not an array: {exc}") from None
    try:
        check_real_array(array, "the volume to write")
    except SynthBrainError as exc:
        raise OutputError(str(exc)) from None
    if array.ndim not in (3, 4):
        raise OutputError(
            f"the volume to write has {array.ndim} dimensions, shape {tuple(array.shape)}; "
            "expected (X, Y, Z) or (C, X, Y, Z)"
        )
    return array


def check_real_array(array: np.ndarray, what: str) -> None:
    """A non-empty array of real numbers (not complex, RGB records, text or objects)."""
    if array.dtype.names is not None:
        raise SynthBrainError(
            f"{what} holds {len(array.dtype.names)}-field records (e.g. RGB colour); expected one number per voxel"
        )
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating) or array.dtype == bool):
        raise SynthBrainError(f"{what} holds {array.dtype} values; expected real numbers (integer or floating point)")
    if array.size == 0:
        raise SynthBrainError(f"{what} is empty (shape {tuple(array.shape)})")


def check_affine(affine: Any, what: str) -> np.ndarray:
    """A usable voxel-to-RAS matrix: finite, 4x4, invertible (a zero, singular or NaN one would put
    the voxels on a guessed grid). Returns it as float64."""
    try:
        if np.iscomplexobj(affine):
            raise TypeError("complex numbers")
        affine = np.asarray(affine, dtype=np.float64)
    except (TypeError, ValueError):
        raise SynthBrainError(f"{what} has no voxel-to-world matrix of numbers (affine {str(affine)[:60]!r})") from None
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise SynthBrainError(
            f"{what} has no usable voxel-to-world matrix (affine {affine.round(3).tolist()}); "
            "it must be finite and invertible"
        )
    return affine
