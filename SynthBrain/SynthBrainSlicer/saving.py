"""Synthetic marks that leave Slicer with the data: a JSON sidecar beside every saved result file.

Node attributes (``SynthBrain.Synthetic``, ``SynthBrain.Provenance``) are kept in a saved scene
(.mrml) but not in a volume file: NRRD and NIfTI written by Slicer's storage nodes carry no custom
fields. So each result gets its storage node at creation, and an observer on it writes
``<name>.json`` beside the file whenever Slicer writes it (Save dialog, ``slicer.util.saveNode``,
scripts) - the same sidecar the command line writes (``brain.nii.gz`` -> ``brain.json``).

An existing JSON file that is not a SynthBrain sidecar is never replaced: the sidecar is then
``<name>.synthbrain.json``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import vtk

from . import scene as mrml

#: Compound extensions Slicer writes, longest first (``brain.seg.nrrd`` -> ``brain``).
_EXTENSIONS = (".seg.nrrd", ".nii.gz", ".nrrd", ".nhdr", ".nii", ".mha", ".mhd", ".vtk", ".seq.nrrd")
SIDECAR_KIND = "SynthBrain synthetic image provenance"


def sidecar_path(data_file: str | Path) -> Path | None:
    """``brain.nii.gz`` -> ``brain.json`` (``brain.synthbrain.json`` when ``brain.json`` is someone
    else's; None when that one is someone else's too: no sidecar then, rather than replacing it)."""
    path = Path(data_file)
    name = path.name
    for extension in sorted(_EXTENSIONS, key=len, reverse=True):
        if name.lower().endswith(extension):
            name = name[: -len(extension)]
            break
    else:
        name = path.stem
    for sidecar in (path.with_name(name + ".json"), path.with_name(name + ".synthbrain.json")):
        if not sidecar.exists() or _is_ours(sidecar):
            return sidecar
    return None


def _is_ours(path: Path) -> bool:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("kind") == SIDECAR_KIND
    except (OSError, ValueError, AttributeError):
        return False


def sidecar_content(node, data_file: str | Path) -> dict[str, Any]:
    return {
        "kind": SIDECAR_KIND,
        "synthetic": node.GetAttribute(mrml.SYNTHETIC_ATTRIBUTE) == "true",
        "warning": "SYNTHETIC image made by a generative model; not a real patient scan, not for clinical use",
        "file": Path(data_file).name,
        "node": node.GetName(),
        "provenance": mrml.provenance_of(node),
    }


def write_sidecar(node, data_file: str | Path) -> Path | None:
    """Write the sidecar of ``node`` saved as ``data_file`` (atomically: temporary file, then rename).

    Returns its path, or None when it could not be written (both names are the user's files, or the
    folder refused it): that is logged, since it happens inside Slicer's save, which has no way to
    show it.
    """
    target = sidecar_path(data_file)
    if target is None:
        logging.warning(
            "SynthBrain: %s and its .synthbrain.json name are your own files; no provenance sidecar written", data_file
        )
        return None
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(
            json.dumps(sidecar_content(node, data_file), indent=2, sort_keys=True, default=mrml._json_value),
            encoding="utf-8",
        )
        os.replace(temporary, target)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        logging.error("SynthBrain: the provenance sidecar %s could not be written: %s", target, exc)
        return None
    return target


def keep_provenance_on_save(node) -> None:
    """Give ``node`` a storage node whose every completed write also writes the sidecar."""
    if node.GetStorageNode() is None:
        node.AddDefaultStorageNode()
    storage = node.GetStorageNode()
    if storage is None:  # a node class without file storage
        return
    scene, nodeID = node.GetScene(), node.GetID()
    written: dict[str, int] = {}

    def onModified(caller, event):
        data_file = caller.GetFileName()
        if not data_file or caller.GetWriteState() != caller.TransferDone or not os.path.isfile(data_file):
            return
        stamp = os.stat(data_file).st_mtime_ns
        if written.get(data_file) == stamp:
            return  # this write already has its sidecar
        current = scene.GetNodeByID(nodeID) if scene is not None else None
        if current is not None:
            write_sidecar(current, data_file)
            written[data_file] = stamp

    storage.AddObserver(vtk.vtkCommand.ModifiedEvent, onModified)
