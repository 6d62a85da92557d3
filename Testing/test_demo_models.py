"""Semantic checks on the shipped demo models (Resources/Models): they must do what their cards say.

These use the trained weights, so each check could fail if training went wrong: ventricles grow
with age, painted lesions appear where painted, and asking for no lesion gives none.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from synthbrain_dev.evaluation.evaluators import flair_search_region
from synthbrain_dev.phantoms import PhantomPopulation, SubjectSpec, measure_ventricular_volume_ml, paint_lesion
from SynthBrainLib import load_pipeline
from SynthBrainLib.models.store import ModelStore, demo_models_dir

# model semantics on the trained demo weights: ~90 s on 2 CPU cores in all
pytestmark = pytest.mark.slow

DEMOS = ("brain-ldm-demo", "labels-demo", "label2image-demo")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return ModelStore(home=tmp_path_factory.mktemp("unused-cache"), shipped=[demo_models_dir()])


def test_demo_models_are_shipped_and_verified(store):
    for model_id in DEMOS:
        installed = store.locate(model_id)
        assert installed.location == "shipped"
        assert {w.checksum for w in installed.weights.values()} == {"verified"}
    total = sum(store.locate(m).size_bytes for m in DEMOS)
    assert total < 40e6, f"demo weights are {total / 1e6:.1f} MB; the budget is 40 MB"


def test_older_age_gives_larger_ventricles(store):
    """Mean over seeds of the ventricular volume measured on images generated at 50 and at 80 years.

    Only age and sex are given: the volumes take the card's age-typical defaults (default_from),
    as a user who asks for an older brain expects.
    """
    pipe = load_pipeline("brain-ldm-demo", device="cpu", store=store)
    assert pipe.card.conditioning.variable("ventricular_volume").default_from
    young, old = [], []
    for seed in range(3):
        for age, out in ((50, young), (80, old)):
            image = pipe.generate(seed=seed, age=age, sex="female", steps=25).image
            out.append(measure_ventricular_volume_ml(image, pipe.card.output.affine))
    assert np.mean(old) > np.mean(young) + 2.0, (young, old)


def test_ventricle_slider_changes_the_measured_ventricles(store):
    """The complaint of issue 14: the slider barely changed the image (7 % between 15 % and 85 %
    of its range). With guidance (the card's default scale) the measured volume follows it."""
    pipe = load_pipeline("brain-ldm-demo", device="cpu", store=store)
    lo, hi = pipe.card.conditioning.variable("ventricular_volume").range
    measured = {}
    for share in (0.2, 0.7):
        request = lo + share * (hi - lo)
        measured[share] = [
            measure_ventricular_volume_ml(
                pipe.generate(seed=seed, age=65, sex="female", ventricular_volume=request).image,
                pipe.card.output.affine,
            )
            for seed in range(3)
        ]
    small, large = np.mean(measured[0.2]), np.mean(measured[0.7])
    requested_change = 0.5 * (hi - lo)
    assert large - small > 0.3 * requested_change, f"measured {measured} for a {requested_change:.0f} mL change"


def test_no_lesion_requested_gives_none(store):
    """At most a trace: under 0.2 % of the brain (up to 0.11 % measured); 86 % of the training
    phantoms with WMH have more than that, and a requested WMH gives several times more (below)."""
    pipe = load_pipeline("labels-demo", device="cpu", store=store)
    lesion_values = [pipe.card.label_names.index(n) for n in ("wmh", "tumour", "edema", "gdtumour")]
    for seed in range(3):
        result = pipe.generate(seed=seed, steps=25)
        brain = np.count_nonzero(result.labels)
        lesions = np.count_nonzero(np.isin(result.labels, lesion_values))
        assert brain > 10_000
        assert lesions / brain < 2e-3, f"seed {seed}: {lesions} lesion voxels requested none"


def test_requested_wmh_appears(store):
    pipe = load_pipeline("labels-demo", device="cpu", store=store)
    wmh = pipe.card.conditioning.variable("wmh").range[1] * 0.6
    fractions = [
        pipe.generate(seed=seed, wmh=wmh, steps=25).provenance["lesions"]["wmh"]["fraction"] for seed in range(3)
    ]
    assert min(fractions) > 0.002, fractions


def test_painted_lesion_shows_where_painted(store):
    pipe = load_pipeline("label2image-demo", device="cpu", store=store)
    card = pipe.card
    pop = PhantomPopulation(seed=0, spacing_mm=card.output.spacing[0], shape=tuple(card.output.shape))
    healthy = pop.make(SubjectSpec(age=60, sex="female", deformation_seed=123456))
    wm = card.label_names.index("wm")
    deep = np.argwhere(ndi.binary_erosion(healthy.labels == wm, iterations=3))
    centre = deep[len(deep) // 2]
    grid = np.indices(healthy.labels.shape)
    mask = (sum((grid[a] - centre[a]) ** 2 for a in range(3)) <= 3.0**2) & (healthy.labels == wm)
    painted = paint_lesion(healthy.labels, mask, "wmh")
    flair = pipe.generate(painted, affine=healthy.affine, sequence="FLAIR", seed=0).image
    normal_wm = ndi.binary_erosion(painted == wm, iterations=1)
    assert flair[mask].mean() > flair[normal_wm].mean() + 4 * flair[normal_wm].std()
    detected = (flair > flair[normal_wm].mean() + 3 * flair[normal_wm].std()) & flair_search_region(
        painted, wm, card.label_names.index("wmh")
    )
    dice = 2 * np.logical_and(detected, mask).sum() / (detected.sum() + mask.sum())
    assert dice > 0.5, dice  # 0.61 here; held-out mean 0.54 (docs/evaluation/label2image-demo.md)
    # the same label map without the lesion has no hyperintensity there
    plain = pipe.generate(healthy.labels, affine=healthy.affine, sequence="FLAIR", seed=0).image
    assert plain[mask].mean() < flair[mask].mean() - 0.1


def test_each_sequence_has_its_own_contrast(store):
    """A painted WMH is darker than white matter on T1 and brighter on FLAIR; CSF is darkest on T1
    and FLAIR and brightest on T2 (the phantoms' MR contrasts the model was trained on)."""
    pipe = load_pipeline("label2image-demo", device="cpu", store=store)
    card = pipe.card
    pop = PhantomPopulation(seed=0, spacing_mm=card.output.spacing[0], shape=tuple(card.output.shape))
    healthy = pop.make(SubjectSpec(age=70, sex="male", deformation_seed=654321))
    names = card.label_names
    wm, gm, csf = (names.index(n) for n in ("wm", "gm", "csf"))
    deep = np.argwhere(ndi.binary_erosion(healthy.labels == wm, iterations=3))
    centre = deep[len(deep) // 3]
    grid = np.indices(healthy.labels.shape)
    mask = (sum((grid[a] - centre[a]) ** 2 for a in range(3)) <= 3.0**2) & (healthy.labels == wm)
    painted = paint_lesion(healthy.labels, mask, "wmh")
    normal_wm = ndi.binary_erosion(painted == wm, iterations=1)
    means = {}
    for seq in ("T1", "FLAIR", "T2"):
        image = pipe.generate(painted, affine=healthy.affine, sequence=seq, seed=1).image
        means[seq] = {
            "wmh": image[mask].mean(),
            "wm": image[normal_wm].mean(),
            "gm": image[painted == gm].mean(),
            "csf": image[painted == csf].mean(),
        }
    t1, flair, t2 = means["T1"], means["FLAIR"], means["T2"]
    assert t1["wmh"] < t1["wm"], f"WMH is darker than white matter on T1: {means}"
    assert t1["csf"] < t1["gm"], f"CSF is darker than grey matter on T1: {means}"
    assert t1["gm"] < t1["wm"], f"grey matter is darker than white matter on T1: {means}"
    assert flair["wmh"] > flair["wm"], f"WMH is brighter than white matter on FLAIR: {means}"
    assert flair["csf"] < flair["wm"], f"CSF is darker than white matter on FLAIR: {means}"
    assert t2["csf"] > t2["gm"], f"CSF is brighter than grey matter on T2: {means}"
    assert t2["csf"] > t2["wm"], f"CSF is brighter than white matter on T2: {means}"
