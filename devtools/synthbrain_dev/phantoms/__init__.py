"""Deterministic phantom brain population derived from the MNI ICBM152 2009a template.

Used to train and evaluate the demo models without real MRI data. Pure numpy/scipy (plus nilearn,
which ships the template); never imports slicer, qt, ctk or vtk, nor matplotlib (only the montage
script does).

Example::

    from synthbrain_dev.phantoms import PhantomPopulation, SubjectSpec, LABEL_NAMES
    pop = PhantomPopulation(seed=0, spacing_mm=2.5, shape=(64, 80, 64))
    subj = pop.subject(3)                       # == pop.make(pop.sample_spec(3))
    subj.partial_volumes, subj.labels, subj.images["FLAIR"], subj.true_ventricular_volume_ml

See docs/phantoms.md. The template's copyright notice is in ``NOTICE_MNI152.txt`` (this folder).
"""

from SynthBrainLib.outputs.measure import measure_brain_volume_ml, measure_t1, measure_ventricular_volume_ml

from .contrast import INTENSITY_TABLE, SEQUENCES, render_contrast, tissue_intensities
from .dataset import PhantomDataset, build_dataset, load_dataset, load_subject
from .labels import LABEL_INDEX, LABEL_NAMES, LESION_NAMES, TISSUE_CHANNELS, one_hot, paint_lesion
from .population import (
    PhantomPopulation,
    PhantomSubject,
    SubjectSpec,
    TumourSpec,
    median_ventricular_volume_ml,
)

__all__ = [
    "PhantomPopulation",
    "PhantomSubject",
    "SubjectSpec",
    "TumourSpec",
    "LABEL_NAMES",
    "LABEL_INDEX",
    "LESION_NAMES",
    "TISSUE_CHANNELS",
    "INTENSITY_TABLE",
    "SEQUENCES",
    "render_contrast",
    "tissue_intensities",
    "paint_lesion",
    "one_hot",
    "measure_ventricular_volume_ml",
    "measure_brain_volume_ml",
    "measure_t1",
    "median_ventricular_volume_ml",
    "build_dataset",
    "load_dataset",
    "load_subject",
    "PhantomDataset",
]
