"""FreeSurfer and SynthSeg segmentation values, and the tissue class of the model's schema each one
belongs to (background, csf, gm, wm, dgm, brainstem, wmh).

The list is FreeSurfer's own colour table, ``distribution/FreeSurferColorLUT.txt`` of
freesurfer/freesurfer at commit 62228ba (FreeSurfer 7.x), restricted to the values that these
outputs contain:

* ``aseg.mgz`` (recon-all, and SAMSEG's lesion label 99),
* ``aparc+aseg.mgz`` and ``aparc.DKTatlas+aseg.mgz`` (Desikan-Killiany cortex 1000-1035 / 2000-2035),
* ``aparc.a2009s+aseg.mgz`` (Destrieux cortex 11100-11175 / 12100-12175),
* ``wmparc.mgz`` (white-matter parcels 3000-3035 / 4000-4035, unsegmented WM 5001 / 5002),
* SynthSeg 1.0 and 2.0, with and without ``--parc`` (a subset of the aseg values, and 1001-1035 /
  2001-2035; BBillot/SynthSeg ``data/labels table.txt``).

A value FreeSurfer's table does not give one of these outputs (1 "Cerebral-Exterior", the head
labels 118-158, ...) is refused by :func:`freesurfer_classes`, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..outputs import markdown

#: LUT version these tables were checked against (freesurfer/freesurfer distribution/FreeSurferColorLUT.txt).
LUT_SOURCE = "FreeSurferColorLUT.txt, freesurfer/freesurfer commit 62228ba"


@dataclass(frozen=True)
class FreeSurferLabel:
    """One value (or a run of values) of FreeSurfer's colour table and its class in the schema."""

    first: int
    last: int
    name: str  #: FreeSurferColorLUT name (for a run: what the run holds)
    tissue: str  #: schema class: background, csf, gm, wm, dgm, brainstem or wmh
    why: str = ""  #: for an ambiguous structure, why this class

    @property
    def values(self) -> range:
        return range(self.first, self.last + 1)


def _pair(left: int, right: int, name: str, tissue: str, why: str = "") -> list[FreeSurferLabel]:
    return [
        FreeSurferLabel(left, left, f"Left-{name}", tissue, why),
        FreeSurferLabel(right, right, f"Right-{name}", tissue, why),
    ]


_VESSEL = (
    "FreeSurfer's 'vessel' marks dark voxels at the base of the basal ganglia (lenticulostriate vessels and their "
    "perivascular spaces, a few voxels wide) inside deep grey matter; a radiologist reads that region as basal "
    "ganglia, and a CSF class there would put fluid islands in the putamen"
)
_CHOROID = "choroid plexus lies inside the lateral ventricles and is read as part of the ventricle"
_WM_HYPO = (
    "FreeSurfer's WM hypointensities are T1 white-matter signal abnormalities; in the populations where they "
    "are large (ageing, small-vessel disease, MS) they are the FLAIR white-matter hyperintensities, so they "
    "stay lesions, and a lesion inserted beside them sees the patient's existing lesions"
)
_NON_WM_HYPO = (
    "non-WM hypointensities are lacunes and perivascular spaces found in the basal ganglia and thalamus: the deep "
    "grey matter they lie in"
)
_MEDIAL_TEMPORAL = "hippocampus (archicortex) and amygdala have grey-matter signal and continue the temporal cortex"
_CEREBELLUM_WM = "cerebellar white matter is white matter by signal and tissue"
_CEREBELLUM_GM = "cerebellar cortex is cortex by signal and tissue"
_VENTRAL_DC = "ventral diencephalon: hypothalamus, subthalamic nucleus and substantia nigra, deep grey nuclei"
_PARCELS = "cortical parcels are cortex; the parcellation only names the gyrus"

#: Every value this module accepts, in FreeSurferColorLUT order.
FREESURFER_LABELS: tuple[FreeSurferLabel, ...] = (
    FreeSurferLabel(0, 0, "Unknown", "background"),
    *_pair(2, 41, "Cerebral-White-Matter", "wm"),
    *_pair(3, 42, "Cerebral-Cortex", "gm"),
    *_pair(4, 43, "Lateral-Ventricle", "csf"),
    *_pair(5, 44, "Inf-Lat-Vent", "csf"),
    *_pair(7, 46, "Cerebellum-White-Matter", "wm", _CEREBELLUM_WM),
    *_pair(8, 47, "Cerebellum-Cortex", "gm", _CEREBELLUM_GM),
    *_pair(9, 48, "Thalamus-unused", "dgm", "the thalamus value of FreeSurfer releases before 6"),
    *_pair(10, 49, "Thalamus", "dgm"),
    *_pair(11, 50, "Caudate", "dgm"),
    *_pair(12, 51, "Putamen", "dgm"),
    *_pair(13, 52, "Pallidum", "dgm"),
    FreeSurferLabel(14, 14, "3rd-Ventricle", "csf"),
    FreeSurferLabel(15, 15, "4th-Ventricle", "csf"),
    FreeSurferLabel(16, 16, "Brain-Stem", "brainstem"),
    *_pair(17, 53, "Hippocampus", "gm", _MEDIAL_TEMPORAL),
    *_pair(18, 54, "Amygdala", "gm", _MEDIAL_TEMPORAL),
    FreeSurferLabel(24, 24, "CSF", "csf"),
    *_pair(25, 57, "Lesion", "wmh", "FreeSurfer's lesion label (white-matter lesions in practice)"),
    *_pair(26, 58, "Accumbens-area", "dgm"),
    *_pair(28, 60, "VentralDC", "dgm", _VENTRAL_DC),
    *_pair(30, 62, "vessel", "dgm", _VESSEL),
    *_pair(31, 63, "choroid-plexus", "csf", _CHOROID),
    FreeSurferLabel(72, 72, "5th-Ventricle", "csf", "cavum septi pellucidi: a fluid space"),
    FreeSurferLabel(77, 77, "WM-hypointensities", "wmh", _WM_HYPO),
    *_pair(78, 79, "WM-hypointensities", "wmh", _WM_HYPO),
    FreeSurferLabel(80, 80, "non-WM-hypointensities", "dgm", _NON_WM_HYPO),
    *_pair(81, 82, "non-WM-hypointensities", "dgm", _NON_WM_HYPO),
    FreeSurferLabel(85, 85, "Optic-Chiasm", "wm", "a myelinated tract"),
    FreeSurferLabel(99, 99, "Lesion", "wmh", "SAMSEG's lesion label"),
    FreeSurferLabel(192, 192, "Corpus_Callosum", "wm"),
    FreeSurferLabel(251, 251, "CC_Posterior", "wm"),
    FreeSurferLabel(252, 252, "CC_Mid_Posterior", "wm"),
    FreeSurferLabel(253, 253, "CC_Central", "wm"),
    FreeSurferLabel(254, 254, "CC_Mid_Anterior", "wm"),
    FreeSurferLabel(255, 255, "CC_Anterior", "wm"),
    FreeSurferLabel(1000, 1035, "ctx-lh-* (Desikan-Killiany: aparc, DKTatlas, SynthSeg --parc)", "gm", _PARCELS),
    FreeSurferLabel(2000, 2035, "ctx-rh-* (Desikan-Killiany: aparc, DKTatlas, SynthSeg --parc)", "gm", _PARCELS),
    FreeSurferLabel(3000, 3035, "wm-lh-* (wmparc)", "wm"),
    FreeSurferLabel(4000, 4035, "wm-rh-* (wmparc)", "wm"),
    FreeSurferLabel(5001, 5001, "Left-UnsegmentedWhiteMatter (wmparc)", "wm"),
    FreeSurferLabel(5002, 5002, "Right-UnsegmentedWhiteMatter (wmparc)", "wm"),
    FreeSurferLabel(11100, 11175, "ctx_lh_* (Destrieux: aparc.a2009s)", "gm", _PARCELS),
    FreeSurferLabel(12100, 12175, "ctx_rh_* (Destrieux: aparc.a2009s)", "gm", _PARCELS),
)

#: value -> schema class name, for every value in :data:`FREESURFER_LABELS`.
FREESURFER_TO_SCHEMA: dict[int, str] = {v: label.tissue for label in FREESURFER_LABELS for v in label.values}


def freesurfer_lookup(label_names: tuple[str, ...]) -> np.ndarray:
    """A table indexed by FreeSurfer value giving the model's label value (uint8); values outside
    :data:`FREESURFER_TO_SCHEMA` hold 255."""
    table = np.full(max(FREESURFER_TO_SCHEMA) + 1, 255, np.uint8)
    for value, name in FREESURFER_TO_SCHEMA.items():
        table[value] = label_names.index(name)
    return table


def markdown_table() -> str:
    """Every accepted value with its name and class (docs/freesurfer-labels.md is this text)."""
    header = ("value", "FreeSurfer name", "class", "why (ambiguous structures)")
    rows = []
    for label in FREESURFER_LABELS:
        value = str(label.first) if label.first == label.last else f"{label.first}–{label.last}"
        rows.append((value, label.name, label.tissue, label.why))
    return "\n".join(markdown.markdown_table(header, rows))
