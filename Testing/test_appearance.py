"""How a lesion looks (SynthBrainLib.insertion.appearance): measured on volumes with a known answer,
and imposed on a change field without touching anything beyond the blend weights."""

from __future__ import annotations

import numpy as np
import pytest

from SynthBrainLib import ConditionError
from SynthBrainLib.insertion import appearance

AFFINE = np.diag([1.0, 1.0, 1.0, 1.0])


def ball(shape, centre, radius):
    return np.linalg.norm(np.indices(shape) - np.asarray(centre)[:, None, None, None], axis=0) <= radius


@pytest.fixture
def tissue():
    """White matter at 100 with a little noise, in a 48^3 brain."""
    rng = np.random.default_rng(0)
    image = 100.0 + rng.normal(0.0, 2.0, (48, 48, 48))
    return image, np.ones(image.shape, bool)


def test_contrast_penumbra_and_texture_of_a_known_lesion(tissue):
    image, brain = tissue
    lesion = ball(image.shape, (24, 24, 24), 5)
    bright = image.copy()
    bright[lesion] *= 1.4
    measured = appearance.measure(bright, lesion, AFFINE, brain)
    assert measured.contrast == pytest.approx(1.4, abs=0.01), f"a lesion 40 % brighter: {measured}"
    assert abs(measured.penumbra) < 0.03, f"a step edge leaves no excess outside the lesion: {measured}"
    assert measured.cv == pytest.approx(0.02, abs=0.005), f"its texture is the tissue's noise: {measured}"
    assert measured.edge > 0, "it has an edge"


def test_shaping_gives_the_target_look_and_nothing_beyond_the_weights(tissue):
    image, brain = tissue
    lesion = ball(image.shape, (24, 24, 24), 5)
    distance = np.linalg.norm(np.indices(image.shape) - 24.0, axis=0) - 5.0
    weights = np.clip(1.0 - np.maximum(distance, 0.0) / 3.0, 0.0, 1.0)  # 1 inside, 0 beyond 3 mm
    model_change = np.where(lesion, 80.0, 20.0)  # a model much brighter than real lesions
    target = appearance.LesionAppearance("FLAIR", 1.3, 0.3, None, "test")
    change, record = appearance.shape_change(image, model_change, weights, lesion, AFFINE, brain, target)
    result = image + weights * change
    measured = appearance.measure(result, lesion, AFFINE, brain)
    assert measured.contrast == pytest.approx(1.3, abs=0.01), f"the target contrast: {measured}"
    assert measured.penumbra == pytest.approx(0.3, abs=0.08), f"about the target penumbra: {measured}"
    assert np.all(change[weights == 0] == 0), "no change where the blend weight is 0"
    assert record["target"]["source"] == "test", "the record names what was imposed"


def test_the_patients_lesions_set_the_target(tissue):
    image, brain = tissue
    existing = ball(image.shape, (12, 12, 12), 4) | ball(image.shape, (36, 36, 36), 4)
    patient = image.copy()
    patient[existing] *= 1.25
    look = appearance.of_patient(patient, AFFINE, existing, brain, "FLAIR")
    assert look.contrast == pytest.approx(1.25, abs=0.01), f"their contrast: {look}"
    assert look.source.startswith("this patient's lesions (2 lesions"), look.source
    with pytest.raises(ConditionError, match="empty"):
        appearance.of_patient(patient, AFFINE, np.zeros(image.shape, bool), brain, "FLAIR")


def test_every_reference_names_its_sources():
    for sequence, look in appearance.REFERENCE.items():
        assert look.sequence == sequence, sequence
        assert "published" in look.source and "20" in look.source, f"{sequence}: {look.source}"
        assert (look.contrast > 1) == (sequence != "T1"), f"{sequence}: hyperintense on FLAIR/T2, hypo on T1"
