"""Outputs: results and the files they become.

* :mod:`.results` — :class:`~.results.SynthesisResult` (image or labels, affine, provenance).
* :mod:`.io` — reading volumes and writing synthetic ones (NIfTI/NRRD, marked synthetic, provenance sidecar).
* :mod:`.preview` — PNG montages.  * :mod:`.resample` — grids and resampling.
* :mod:`.measure` — image-based volume estimators (ventricles, brain) of generated T1 brains.
* :mod:`.atomic_files` — atomic, create-exclusive writes.  * :mod:`.interrupts` — SIGTERM as Ctrl-C.
* :mod:`.markdown` — the one Markdown table writer (docs tables, developer reports).
"""
