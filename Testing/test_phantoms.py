"""Tests of the MNI152 phantom population (synthbrain_dev.phantoms).

One population (2.5 mm, 64x80x64) is shared by all tests; the template preparation (~10 s) is done
once per session. Whole file: ~30-45 s on 2 CPU cores.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest

from synthbrain_dev.phantoms import (
    INTENSITY_TABLE,
    LABEL_NAMES,
    PhantomPopulation,
    SubjectSpec,
    TumourSpec,
    build_dataset,
    load_dataset,
    paint_lesion,
    render_contrast,
)
from synthbrain_dev.phantoms.labels import CSF, DGM, GM, WM, WMH
from SynthBrainLib.outputs.measure import measure_brain_volume_ml, measure_ventricular_volume_ml

SHAPE = (64, 80, 64)

pytestmark = pytest.mark.slow  # builds an MNI152 phantom population (template preparation ~10 s, file ~40 s)


@pytest.fixture(scope="module")
def pop():
    return PhantomPopulation(seed=0, spacing_mm=2.5, shape=SHAPE)


@pytest.fixture(scope="module")
def healthy(pop):
    return pop.make(SubjectSpec(age=65, sex="female", deformation_seed=11))


@pytest.fixture(scope="module")
def wmh_subject(pop):
    return pop.make(SubjectSpec(age=78, sex="male", wmh_load=0.02, deformation_seed=5))


def test_label_schema():
    assert LABEL_NAMES == ("background", "csf", "gm", "wm", "dgm", "brainstem", "wmh", "tumour", "edema", "gdtumour")
    assert set(INTENSITY_TABLE) == set(LABEL_NAMES)


def test_grid_and_shapes(pop, healthy):
    s = healthy
    assert s.shape == SHAPE
    assert s.affine.shape == (4, 4), f"affine shape {s.affine.shape}"
    assert s.affine.dtype == np.float64, f"affine dtype {s.affine.dtype}"
    assert np.allclose(np.diag(s.affine)[:3], 2.5)
    # the grid is centred on the brain: the brain's centre of mass is near the grid centre
    brain = s.partial_volumes[[GM, WM, DGM]].sum(0)
    com_vox = np.array(
        [
            (brain.sum(axis=tuple(a for a in range(3) if a != d)) * np.arange(SHAPE[d])).sum() / brain.sum()
            for d in range(3)
        ]
    )
    com_mm = s.affine[:3, :3] @ com_vox + s.affine[:3, 3]
    assert np.all(np.abs(com_mm - pop.centre_mm) < 12.0), com_mm
    # nothing of the brain touches the grid faces (except the cut medulla at the bottom)
    tissue = s.labels > CSF
    assert not tissue[0].any(), "tissue touches the first x face"
    assert not tissue[-1].any(), "tissue touches the last x face"
    assert not tissue[:, 0].any(), "tissue touches the first y face"
    assert not tissue[:, -1].any(), "tissue touches the last y face"
    assert not tissue[:, :, -1].any(), "tissue touches the top z face"
    for seq in ("T1", "FLAIR", "T2"):
        img = s.images[seq]
        assert img.shape == SHAPE, f"{seq} shape {img.shape}"
        assert img.dtype == np.float32, f"{seq} dtype {img.dtype}"
        assert img.min() >= 0.0, f"{seq} minimum {img.min()} is below 0"
        assert img.max() <= 1.0, f"{seq} maximum {img.max()} is above 1"
        assert np.all(img[s.partial_volumes[0] >= 0.5] == 0.0), f"{seq} is not skull-stripped (background is not 0)"


def test_partial_volumes_and_labels(healthy, wmh_subject):
    for s in (healthy, wmh_subject):
        pv = s.partial_volumes
        assert pv.shape == (10,) + SHAPE, f"partial volume shape {pv.shape}"
        assert pv.dtype == np.float32, f"partial volume dtype {pv.dtype}"
        assert pv.min() >= 0.0, f"a partial volume is negative: {pv.min()}"
        np.testing.assert_allclose(pv.sum(0), 1.0, atol=1e-4)
        assert s.labels.dtype == np.uint8, f"label dtype {s.labels.dtype}"
        np.testing.assert_array_equal(s.labels, np.argmax(pv, 0))
        # ventricles are CSF
        vm = s.ventricle_mask
        assert vm.dtype == bool, f"ventricle mask dtype {vm.dtype}"
        assert vm.any(), "the ventricle mask is empty"
        assert np.all(s.labels[vm] == CSF), "the ventricles are labelled CSF"
        assert np.all(s.ventricle_pv <= pv[CSF] + 1e-6), "ventricle partial volume exceeds the CSF one"
        # every healthy tissue class is present
        for c in ("csf", "gm", "wm", "dgm", "brainstem"):
            assert (s.labels == LABEL_NAMES.index(c)).sum() > 100, c


def test_determinism(pop):
    a = pop.subject(4)
    b = PhantomPopulation(seed=0, spacing_mm=2.5, shape=SHAPE).subject(4)
    assert a.spec == b.spec
    np.testing.assert_array_equal(a.partial_volumes, b.partial_volumes)
    np.testing.assert_array_equal(a.labels, b.labels)
    for seq in a.images:
        np.testing.assert_array_equal(a.images[seq], b.images[seq])
    c = pop.make(pop.sample_spec(4))
    np.testing.assert_array_equal(a.images["T1"], c.images["T1"])
    # a different index (or population seed) gives a different subject
    d = pop.subject(5)
    assert d.spec != a.spec
    assert np.abs(d.partial_volumes - a.partial_volumes).mean() > 1e-3
    assert PhantomPopulation(seed=1).sample_spec(4) != a.spec


def test_spec_sampler_ranges(pop):
    specs = [pop.sample_spec(i) for i in range(200)]
    ages = np.array([s.age for s in specs])
    assert ages.min() >= 45, f"youngest sampled age {ages.min()}"
    assert ages.max() <= 82, f"oldest sampled age {ages.max()}"
    assert 0.3 < np.mean([s.sex == "male" for s in specs]) < 0.7
    assert 0.35 < np.mean([s.wmh_load > 0 for s in specs]) < 0.75
    assert 0.15 < np.mean([s.tumour is not None for s in specs]) < 0.35
    assert len({s.deformation_seed for s in specs}) == 200
    # sample_spec is a pure function of (seed, index)
    assert pop.sample_spec(17) == PhantomPopulation(seed=0).sample_spec(17)
    # specs survive a JSON round trip
    for s in specs[:20]:
        assert SubjectSpec.from_dict(json.loads(json.dumps(s.to_dict()))) == s


def test_even_wmh_loads_cover_the_range_a_label_generator_is_asked_for(pop):
    even = PhantomPopulation(seed=0, wmh_load="even")
    aged = [pop.sample_spec(i).wmh_load for i in range(400)]
    spread = [even.sample_spec(i).wmh_load for i in range(400)]
    assert [w > 0 for w in aged] == [w > 0 for w in spread], "the same subjects have WMH in both populations"
    loads = np.array([w for w in spread if w > 0])
    assert loads.min() >= 0.0005 and loads.max() <= 0.06, f"loads within 0.05-6 %: {loads.min()}-{loads.max()}"
    above = float(np.mean(loads > 0.017))
    assert 0.2 < above < 0.4, f"log-uniform: about 30 % of the loads above 1.7 %, got {above:.2f}"
    assert np.mean([w > 0.017 for w in aged if w > 0]) < 0.1, "the ageing population rarely has loads that large"
    with pytest.raises(ValueError, match="wmh_load 'linear' is not one of age, even, heavy"):
        PhantomPopulation(seed=0, wmh_load="linear")


def test_heavy_wmh_loads_fill_the_upper_range():
    heavy = PhantomPopulation(seed=1, p_wmh=1.0, p_tumour=0.0, wmh_load="heavy")
    specs = [heavy.sample_spec(i) for i in range(300)]
    loads = np.array([s.wmh_load for s in specs])
    assert loads.min() >= 0.01, f"every heavy load is at least 1 % of the brain, got {loads.min():.4f}"
    assert loads.max() <= 0.06, f"no heavy load beyond 6 %, got {loads.max():.4f}"
    above = float(np.mean(loads > 0.02))
    assert 0.5 < above < 0.75, f"log-uniform over 1-6 %: about 61 % above 2 %, got {above:.2f}"
    assert not any(s.tumour for s in specs), "p_tumour 0 gives no tumour"


def test_ageing_enlarges_ventricles_and_shrinks_brain(pop):
    vent, brain = {50: [], 80: []}, {50: [], 80: []}
    for seed in (1, 2, 3):
        for age in (50, 80):
            s = pop.make(SubjectSpec(age=age, sex="female", deformation_seed=seed))
            vent[age].append(s.true_ventricular_volume_ml)
            brain[age].append(s.true_brain_volume_ml)
    for i in range(3):  # same deformation seed: strictly ordered per subject
        assert vent[80][i] > 1.5 * vent[50][i]
        assert brain[80][i] < brain[50][i] - 30.0
    assert 8.0 < np.mean(vent[50]) < 30.0, f"mean ventricular volume at 50: {np.mean(vent[50])} ml"
    assert 25.0 < np.mean(vent[80]) < 90.0, f"mean ventricular volume at 80: {np.mean(vent[80])} ml"
    assert 900.0 < np.mean(brain[80]) < np.mean(brain[50]) < 1400.0


def test_sex_and_individual_ventricle_effects(pop):
    f = pop.make(SubjectSpec(age=60, sex="female", deformation_seed=2))
    m = pop.make(SubjectSpec(age=60, sex="male", deformation_seed=2))
    ratio = m.true_brain_volume_ml / f.true_brain_volume_ml
    assert 1.06 < ratio < 1.12  # ~1.03^3
    big = pop.make(SubjectSpec(age=60, sex="female", deformation_seed=2, ventricle_z=1.5))
    assert big.true_ventricular_volume_ml > 1.4 * f.true_ventricular_volume_ml


def test_measured_volumes_track_true_volumes(pop):
    subjects = [pop.subject(i) for i in range(12)]
    true_v = np.array([s.true_ventricular_volume_ml for s in subjects])
    meas_v = np.array([s.measured_ventricular_volume_ml for s in subjects])
    true_b = np.array([s.true_brain_volume_ml for s in subjects])
    meas_b = np.array([s.measured_brain_volume_ml for s in subjects])
    r_v = np.corrcoef(true_v, meas_v)[0, 1]
    r_b = np.corrcoef(true_b, meas_b)[0, 1]
    # measured on 160 subjects: r = 0.95 (ventricles), 0.99 (brain); these bounds leave margin
    assert r_v > 0.8, (r_v, true_v, meas_v)
    assert r_b > 0.9, r_b
    assert np.median(meas_v / true_v) == pytest.approx(1.0, abs=0.35)
    assert np.median(meas_b / true_b) == pytest.approx(1.0, abs=0.15)
    # the estimators only need the image and the affine
    s = subjects[0]
    assert measure_ventricular_volume_ml(s.images["T1"], s.affine) == pytest.approx(s.measured_ventricular_volume_ml)
    assert measure_brain_volume_ml(s.images["T1"], s.affine) == pytest.approx(s.measured_brain_volume_ml)


def _means(subject, seq):
    img, lab = subject.images[seq], subject.labels
    return {n: float(img[lab == i].mean()) for i, n in enumerate(LABEL_NAMES) if (lab == i).sum() > 20}


def test_contrasts(wmh_subject):
    t1, flair, t2 = (_means(wmh_subject, s) for s in ("T1", "FLAIR", "T2"))
    assert t1["wm"] > t1["gm"] > t1["csf"]
    assert t1["wm"] > t1["wmh"] > t1["csf"]  # WMH slightly darker than WM on T1
    assert flair["wmh"] > flair["gm"] > flair["csf"]
    assert flair["wmh"] > flair["wm"]
    assert t2["csf"] > t2["wmh"] > t2["gm"] > t2["wm"]


def test_intensity_table_orderings():
    col = {"T1": 0, "FLAIR": 1, "T2": 2}
    v = {s: {n: INTENSITY_TABLE[n][c] for n in LABEL_NAMES} for s, c in col.items()}
    assert v["T1"]["wm"] > v["T1"]["gm"] > v["T1"]["csf"]
    assert v["T1"]["gdtumour"] > v["T1"]["wm"] > v["T1"]["wmh"] > v["T1"]["gm"] > v["T1"]["edema"] > v["T1"]["csf"]
    assert min(v["FLAIR"]["wmh"], v["FLAIR"]["edema"]) > max(v["FLAIR"]["gm"], v["FLAIR"]["wm"])
    assert v["FLAIR"]["csf"] < min(v["FLAIR"][n] for n in LABEL_NAMES[2:])
    assert v["T2"]["csf"] > max(v["T2"][n] for n in LABEL_NAMES[2:])
    assert min(v["T2"]["wmh"], v["T2"]["edema"]) > v["T2"]["gm"] > v["T2"]["wm"]


def test_lesion_fractions(healthy, wmh_subject, pop):
    assert healthy.lesion_fractions == {"wmh": 0.0, "tumour": 0.0, "edema": 0.0, "gdtumour": 0.0}
    lf = wmh_subject.lesion_fractions
    assert lf["wmh"] == pytest.approx(0.02, rel=0.05)
    assert lf["tumour"] == lf["edema"] == lf["gdtumour"] == 0.0
    # WMH sit in white matter, mostly near the ventricles
    assert (wmh_subject.labels == WMH).sum() > 50
    tum = pop.make(
        SubjectSpec(
            age=60, deformation_seed=7, tumour=TumourSpec(centre_mm=(28.0, -10.0, 25.0), radius_mm=15.0, edema_mm=10.0)
        )
    )
    lf = tum.lesion_fractions
    assert lf["wmh"] == 0.0, f"a tumour subject has WMH: {lf}"
    assert lf["tumour"] > 0.0005, f"tumour fraction too small: {lf}"
    assert lf["gdtumour"] > 0.005, f"enhancing tumour fraction too small: {lf}"
    assert lf["edema"] > 0.005, f"edema fraction too small: {lf}"
    brain = tum.true_brain_volume_ml
    pv_sum = tum.partial_volumes[LABEL_NAMES.index("gdtumour")].sum() * tum.voxel_volume_ml
    assert lf["gdtumour"] == pytest.approx(pv_sum / brain, rel=1e-4)
    # the tumour sits in the right hemisphere (RAS: x > 0), where it was requested
    xs = np.argwhere(tum.labels == LABEL_NAMES.index("gdtumour"))[:, 0]
    assert (tum.affine[0, 0] * xs + tum.affine[0, 3]).mean() > 10.0
    # T1 post-contrast: enhancing rim brighter than white matter
    m = _means(tum, "T1")
    assert m["gdtumour"] > m["wm"], f"enhancing rim is not brighter than WM on T1: {m}"
    assert m["edema"] < m["wm"], f"edema is not darker than WM on T1: {m}"
    non = pop.make(SubjectSpec(age=60, deformation_seed=7, tumour=TumourSpec(enhancing=False)))
    assert non.lesion_fractions["gdtumour"] == 0.0, f"a non-enhancing tumour enhances: {non.lesion_fractions}"
    assert non.lesion_fractions["tumour"] > 0.005, f"non-enhancing tumour fraction too small: {non.lesion_fractions}"


def test_painted_lesion(pop, healthy):
    # a block of deep white matter painted as WMH into a healthy label map ...
    wm = healthy.labels == WM
    mask = np.zeros(SHAPE, bool)
    mask[20:30, 40:50, 35:42] = True
    mask &= wm
    assert mask.sum() > 50
    painted = paint_lesion(healthy.labels, mask, "wmh")
    assert np.all(painted[mask] == WMH)
    assert np.array_equal(painted[~mask], healthy.labels[~mask])
    # ... CSF and background are never replaced
    csf = healthy.labels == CSF
    assert np.all(paint_lesion(healthy.labels, csf, "wmh")[csf] == CSF)
    # ... into partial volumes (still sums to 1) and through SubjectSpec.painted_lesions
    pv = paint_lesion(healthy.partial_volumes, mask, "wmh")
    np.testing.assert_allclose(pv.sum(0), 1.0, atol=1e-5)
    s = pop.make(SubjectSpec(age=65, sex="female", deformation_seed=11, painted_lesions=((mask, "wmh"),)))
    assert np.all(s.labels[mask] == WMH)
    assert s.lesion_fractions["wmh"] > 0
    # the painted region shows up bright on FLAIR
    assert s.images["FLAIR"][mask].mean() > s.images["FLAIR"][wm & ~mask].mean() + 0.15
    # render_contrast accepts a label map (one-hot) and is deterministic for a seed
    a = render_contrast(painted, "FLAIR", 3)
    b = render_contrast(painted, "FLAIR", np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    clean = render_contrast(painted, "FLAIR", None)
    assert clean[mask].mean() > clean[wm & ~mask].mean()


def test_dataset_build_resume_load(tmp_path, pop):
    folder = tmp_path / "ds"
    build_dataset(pop, 2, folder)
    first = (folder / "subject_00000.npz").stat().st_mtime_ns
    build_dataset(pop, 3, folder)  # resumes: only subject 2 is written
    assert (folder / "subject_00000.npz").stat().st_mtime_ns == first
    assert not list(folder.glob(".tmp-*"))
    ds = load_dataset(folder)
    assert len(ds) == 3, f"dataset holds {len(ds)} subjects"
    assert ds.indices == [0, 1, 2], f"dataset indices {ds.indices}"
    x = ds[2]
    s = pop.subject(2)
    assert x["spec"] == s.spec
    np.testing.assert_array_equal(x["labels"], s.labels)
    np.testing.assert_allclose(x["partial_volumes"], s.partial_volumes, atol=2e-3)
    np.testing.assert_allclose(x["images"]["T2"], s.images["T2"], atol=2e-3)
    assert x["meta"]["true_ventricular_volume_ml"] == pytest.approx(s.true_ventricular_volume_ml)
    assert len(x["meta"]["conditioning"]) == 4
    with pytest.raises(ValueError):
        build_dataset(PhantomPopulation(seed=5), 1, folder)
    with pytest.raises(ValueError, match="different phantom population"):
        build_dataset(PhantomPopulation(seed=0, wmh_load="even"), 1, folder)


def test_no_gui_or_plotting_imports():
    root = Path(__file__).resolve().parents[1] / "devtools" / "synthbrain_dev" / "phantoms"
    banned = {"slicer", "qt", "ctk", "vtk", "PyQt5", "PySide2", "matplotlib"}
    files = sorted(root.glob("*.py"))
    assert len(files) >= 5, f"the phantom modules are found ({len(files)} in {root})"
    for path in files:
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level only (montage.py imports matplotlib inside functions)
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for n in names:
                assert n.split(".")[0] not in banned, f"{path.name} imports {n}"
    assert (root / "NOTICE_MNI152.txt").exists(), "the MNI notice travels with the phantoms"
