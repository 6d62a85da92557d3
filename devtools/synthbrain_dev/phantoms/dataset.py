"""On-disk cache of phantom subjects: one compressed ``.npz`` per subject plus a manifest.

Layout of a dataset folder::

    manifest.json            population parameters (seed, spacing, shape, affine, label names,
                             format version); a folder only ever holds one population
    subject_00000.npz        one file per subject index, written atomically (tmp file + rename)
    ...

Each ``subject_NNNNN.npz`` holds:

* ``partial_volumes``: float16 (10, X, Y, Z) (renormalised to sum 1 and returned as float32 by
  :func:`load_subject`), ``labels``: uint8 (X, Y, Z), ``ventricle_pv``: float16 (X, Y, Z);
* ``T1``, ``FLAIR``, ``T2``: float16 (X, Y, Z) in [0, 1] (returned as float32);
* ``affine``: float64 (4, 4);
* ``meta``: a JSON string: index, spec (``SubjectSpec.to_dict()``), true and measured volumes (mL),
  lesion fractions, and ``conditioning`` = [wmh, tumour, edema, gdtumour] lesion fractions.

:func:`build_dataset` is resumable: files that already exist are skipped, and a half-written file
never has the final name. Several workers (processes) may be used.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from SynthBrainLib.outputs.atomic_files import replaced_atomically

from .labels import LABEL_NAMES, LESION_NAMES
from .population import PhantomPopulation, SubjectSpec

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def subject_filename(index: int) -> str:
    return f"subject_{int(index):05d}.npz"


def _population_record(pop) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "generator": "synthbrain_dev.phantoms",
        "seed": pop.seed,
        "spacing_mm": pop.spacing_mm,
        "shape": list(pop.shape),
        "p_wmh": pop.p_wmh,
        "p_tumour": pop.p_tumour,
        "wmh_load": pop.wmh_load,
        "affine": np.asarray(pop.affine).tolist(),
        "label_names": list(LABEL_NAMES),
        "sequences": ["T1", "FLAIR", "T2"],
        "template": "MNI ICBM152 2009a (nilearn); see devtools/synthbrain_dev/phantoms/NOTICE_MNI152.txt",
    }


def _atomic_write_bytes(path: Path, write_fn) -> None:
    with replaced_atomically(path, suffix=path.suffix) as tmp, open(tmp, "wb") as f:
        write_fn(f)
        f.flush()
        os.fsync(f.fileno())


def subject_record(subject, index: int) -> dict:
    """The arrays (and JSON ``meta``) stored for one subject."""
    lf = subject.lesion_fractions
    meta = {
        "index": int(index),
        "spec": subject.spec.to_dict(),
        "true_ventricular_volume_ml": subject.true_ventricular_volume_ml,
        "true_brain_volume_ml": subject.true_brain_volume_ml,
        "measured_ventricular_volume_ml": subject.measured_ventricular_volume_ml,
        "measured_brain_volume_ml": subject.measured_brain_volume_ml,
        "lesion_fractions": lf,
        "conditioning": [lf[n] for n in LESION_NAMES],
    }
    rec = {
        "partial_volumes": subject.partial_volumes.astype(np.float16),
        "labels": subject.labels.astype(np.uint8),
        "ventricle_pv": subject.ventricle_pv.astype(np.float16),
        "affine": np.asarray(subject.affine, np.float64),
        "meta": np.array(json.dumps(meta)),
    }
    for seq, img in subject.images.items():
        rec[seq] = img.astype(np.float16)
    return rec


def _write_one(pop, index: int, folder: Path) -> str:
    dest = folder / subject_filename(index)
    if dest.exists():
        return "skipped"
    rec = subject_record(pop.subject(index), index)
    _atomic_write_bytes(dest, lambda f: np.savez_compressed(f, **rec))
    return "written"


_WORKER_POP = None


def _worker_init(params):
    global _WORKER_POP
    # Forked from a CLI that turns SIGTERM into KeyboardInterrupt; the pool ends its workers with
    # SIGTERM, which then printed a traceback per worker. Their writes are atomic either way.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    seed, spacing, shape, p_wmh, p_tumour, wmh_load = params
    _WORKER_POP = PhantomPopulation(
        seed=seed, spacing_mm=spacing, shape=shape, p_wmh=p_wmh, p_tumour=p_tumour, wmh_load=wmh_load
    )


def _worker_write(args):
    index, folder = args
    return index, _write_one(_WORKER_POP, index, Path(folder))


def build_dataset(pop, n: int, path, *, start: int = 0, workers: int = 1, progress: bool = False) -> Path:
    """Write subjects ``start .. start + n - 1`` of ``pop`` into the folder ``path``.

    Existing subject files are kept (resumable); a manifest describing the population is written
    first, and an existing manifest of a different population raises ``ValueError``. Subject files
    are written atomically, so an interrupted build leaves only complete files (plus possibly a
    stray ``.tmp-*`` file, ignored and overwritten later). ``workers > 1`` uses that many
    processes (each builds the template once, ~10 s). Returns the folder path.
    """
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    record = _population_record(pop)
    mpath = folder / MANIFEST
    if mpath.exists():
        old = json.loads(mpath.read_text())
        keys = ("format_version", "seed", "spacing_mm", "shape", "p_wmh", "p_tumour", "wmh_load")
        old.setdefault("wmh_load", "age")  # manifests written before the option existed
        if any(old.get(k) != record[k] for k in keys):
            raise ValueError(
                f"{folder} holds a different phantom population ({ {k: old.get(k) for k in keys} }); use another folder"
            )
    else:
        _atomic_write_bytes(mpath, lambda f: f.write(json.dumps(record, indent=1).encode()))
    todo = [i for i in range(start, start + n) if not (folder / subject_filename(i)).exists()]
    t0 = time.time()
    if workers > 1 and len(todo) > 1:
        import multiprocessing as mp

        params = (pop.seed, pop.spacing_mm, pop.shape, pop.p_wmh, pop.p_tumour, pop.wmh_load)
        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
        with ctx.Pool(workers, initializer=_worker_init, initargs=(params,)) as pool:
            for k, (index, _) in enumerate(pool.imap_unordered(_worker_write, [(i, str(folder)) for i in todo])):
                if progress:
                    print(f"phantoms: {k + 1}/{len(todo)} written ({time.time() - t0:.0f} s)", flush=True)
    else:
        for k, index in enumerate(todo):
            _write_one(pop, index, folder)
            if progress:
                print(f"phantoms: {k + 1}/{len(todo)} written ({time.time() - t0:.0f} s)", flush=True)
    return folder


def load_subject(file) -> dict:
    """Read one subject file: a dict with ``partial_volumes`` (float32, sums to 1), ``labels``,
    ``ventricle_pv``, ``images`` {"T1", "FLAIR", "T2"} (float32), ``affine``, ``meta`` (dict) and
    ``spec`` (:class:`SubjectSpec`)."""
    with np.load(file, allow_pickle=False) as z:
        pv = z["partial_volumes"].astype(np.float32)
        pv /= np.maximum(pv.sum(0, keepdims=True), 1e-6)
        meta = json.loads(str(z["meta"]))
        out = {
            "partial_volumes": pv,
            "labels": z["labels"],
            "ventricle_pv": z["ventricle_pv"].astype(np.float32),
            "images": {s: z[s].astype(np.float32) for s in ("T1", "FLAIR", "T2") if s in z.files},
            "affine": z["affine"],
            "meta": meta,
        }
    out["spec"] = SubjectSpec.from_dict(meta["spec"])
    return out


class PhantomDataset(Sequence):
    """A phantom dataset folder read lazily (or from memory with ``in_memory=True``).

    ``ds[i]`` returns :func:`load_subject` of the i-th subject file in index order;
    ``ds.meta(i)`` returns only its JSON metadata (cheap: the npz members are read lazily);
    ``ds.manifest`` is the population record.
    """

    def __init__(self, path, *, in_memory: bool = False):
        self.path = Path(path)
        mpath = self.path / MANIFEST
        if not mpath.exists():
            raise FileNotFoundError(f"{mpath} not found: not a phantom dataset folder")
        self.manifest = json.loads(mpath.read_text())
        self.files = sorted(self.path.glob("subject_*.npz"))
        self.indices = [int(f.stem.split("_")[1]) for f in self.files]
        self._cache = [load_subject(f) for f in self.files] if in_memory else None

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if self._cache is not None:
            return self._cache[i]
        return load_subject(self.files[i])

    def meta(self, i) -> dict:
        if self._cache is not None:
            return self._cache[i]["meta"]
        with np.load(self.files[i], allow_pickle=False) as z:
            return json.loads(str(z["meta"]))


def load_dataset(path, *, in_memory: bool = False) -> PhantomDataset:
    """Open a folder written by :func:`build_dataset` (see :class:`PhantomDataset`)."""
    return PhantomDataset(path, in_memory=in_memory)
