"""`synthbrain-dev evaluate`: its metrics, its captioned figures, and the guidance table end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage as ndi
from tiny_models import _affine, guided, tiny_brain_card, tiny_labels_card, write_model_folder

from synthbrain_dev.evaluation import evaluate_model
from synthbrain_dev.evaluation.evaluators import (
    HELD_OUT_START,
    evaluate_conditional_brain,
    label_control,
    per_request_type,
    tumour_amounts,
)
from synthbrain_dev.evaluation.figures import GLYPH_HEIGHT, captioned_grid, render_text
from synthbrain_dev.evaluation.metrics import (
    high_frequency_energy,
    is_monotonic_increasing,
    mean_gradient_magnitude,
    median_ratio,
)
from SynthBrainLib import ConditionError, load_pipeline


def _evaluable(card: dict) -> dict:
    """A tiny card on a 48^3 grid: MS-SSIM over four scales with a 5-voxel kernel needs > 36 voxels."""
    card["latent"]["shape"] = [card["latent"]["shape"][0], 24, 24, 24]
    card["output"].update(shape=[48, 48, 48], spacing=[3.5] * 3, affine=_affine([48] * 3, [3.5] * 3))
    return card


@pytest.fixture(scope="module")
def guided_brain(tmp_path_factory):
    card = guided(_evaluable(tiny_brain_card("tiny-guided-brain")))
    folder = write_model_folder(card, tmp_path_factory.mktemp("eval") / "tiny-guided-brain")
    return load_pipeline(str(folder), device="cpu", precision="float32")


def test_captions_are_drawn_and_unknown_characters_refused():
    text = render_text("set 27.5 mL", scale=2)
    assert text.shape == (GLYPH_HEIGHT * 2, 6 * 2 * 11), f"11 characters of 6x7 pixels at scale 2: {text.shape}"
    assert 0 < (text > 0).mean() < 0.5, "the caption has ink but is not a filled block"
    assert not np.array_equal(render_text("1"), render_text("7")), "different digits draw differently"
    with pytest.raises(ValueError, match=r"caption 'Z 1': no glyph for 'Z'"):
        render_text("Z 1")


def test_captioned_grid_puts_the_caption_under_each_image():
    volume = np.full((20, 24, 20), 0.5, np.float32)
    grid = captioned_grid([[volume, volume]], [[["got 1.0 mL"], ["got 2.0 mL"]]], zoom=1)
    image_rows = (24 + 3) + (20 + 3)  # axial (Y rows) over coronal (Z rows), each with half a gap below
    assert (grid[image_rows : image_rows + 14] == 255).any(), "white caption pixels lie below the two slices"
    assert not (grid[:image_rows] == 255).any(), "nothing is written over the slices"
    assert (grid[:image_rows] == 127).any(), "the slices are drawn with the window 0-1"
    with pytest.raises(ValueError):
        captioned_grid([[volume]], [[["a"], ["b"]]])


def test_sharpness_measures_fall_when_an_image_is_blurred():
    rng = np.random.default_rng(0)
    labels = ndi.zoom(rng.integers(0, 3, (8, 8, 8)), 6, order=0).astype(np.float32) / 2
    blurred = ndi.gaussian_filter(labels, 1.5)
    mask = np.ones(labels.shape, bool)
    assert mean_gradient_magnitude(blurred, mask) < 0.8 * mean_gradient_magnitude(labels, mask), "blur lowers |grad|"
    assert high_frequency_energy(blurred) < 0.5 * high_frequency_energy(labels), "blur removes fine detail"


def test_a_flat_sweep_is_not_increasing():
    assert is_monotonic_increasing([1.0, 2.0, 2.0, 5.0]), "rising with a plateau"
    assert not is_monotonic_increasing([0.0, 0.0, 0.0]), "a slider that changes nothing does not increase"
    assert not is_monotonic_increasing([1.0, 3.0, 2.0]), "a fall breaks it"


def test_median_ratio_uses_only_positive_requests():
    assert median_ratio([0.5, 1.0, 9.0, 3.0], [0.0, 1.0, 3.0, 2.0]) == pytest.approx(1.5), "median of 1, 3, 1.5"
    assert np.isnan(median_ratio([0.2], [0.0])), "no request, no ratio"


@pytest.mark.slow
def test_brain_evaluation_measures_every_guidance_scale_and_the_slider(guided_brain):
    report, volumes, figures = evaluate_conditional_brain(guided_brain, n=4, log=lambda line: None)
    scales = [row["guidance"] for row in report["guidance_table"]]
    assert scales == [1.0, 2.0, 3.0, 5.0], f"guidance table scales {scales}"
    assert report["guidance"] == 2.0, "the main report is at the card's default scale"
    assert len({row["ms_ssim_between_samples"] for row in report["guidance_table"]}) == 4, "each scale measured"
    sweep = report["slider_sweep"]
    assert sweep["requested_ml"] == [5.0, 27.5, 50.0, 72.5, 95.0], f"slider values {sweep['requested_ml']}"
    assert np.asarray(sweep["measured_ml_per_seed"]).shape == (3, 5), "three seeds x five slider values"
    assert figures["slider"].ndim == 2 and figures["slider"].dtype == np.uint8, "the sweep figure is an image"
    assert len(volumes) == 4, "three samples and a phantom for the montage"
    assert report["sharpness"]["clean_phantom_mean_gradient"] > 0, "the sharpness reference was measured"


def test_a_scale_the_model_cannot_take_is_refused_before_any_work(tmp_path, monkeypatch):
    folder = write_model_folder(tiny_brain_card("tiny-plain"), tmp_path / "tiny-plain")
    with pytest.raises(ConditionError, match="guidance 3: model tiny-plain was not trained with condition dropout"):
        evaluate_model(str(folder), tmp_path / "reports", samples=4, guidance=3.0, log=lambda line: None)
    assert not (tmp_path / "reports").exists(), "nothing was written"


@pytest.mark.slow
def test_label_control_reports_fraction_ratios(tmp_path):
    card = guided(_evaluable(tiny_labels_card("tiny-guided-labels")))
    pipe = load_pipeline(str(write_model_folder(card, tmp_path / "labels")), device="cpu", precision="float32")
    cases = [("none", {}), ("wmh", {"wmh": 0.01}), ("tumour", {"tumour": 0.002, "edema": 0.02, "gdtumour": 0.005})]
    summary, maps = label_control(pipe, cases, steps=4, guidance=3.0, log=lambda line: None)
    ratios = summary["median_ratio_generated_to_requested"]
    for name in ("wmh", "tumour", "edema", "gdtumour"):
        expected = np.median(
            [r["fraction"][name] / r["requested"][name] for r in summary["rows"] if r["requested"][name] > 0]
        )
        assert ratios[name] == pytest.approx(expected), f"{name}: ratio over the cases that asked for it"
    assert summary["sampling"]["steps"] == 4, f"the steps used are recorded: {summary['sampling']}"
    assert len(maps) == 3 and json.dumps(summary, default=float), "one map per case; the summary is JSON"


@pytest.mark.slow
def test_tumour_amounts_asks_for_held_out_phantom_tumours_and_compares_in_log(tmp_path):
    from synthbrain_dev.phantoms import PhantomPopulation

    card = guided(_evaluable(tiny_labels_card("tiny-guided-labels")))
    pipe = load_pipeline(str(write_model_folder(card, tmp_path / "labels")), device="cpu", precision="float32")
    report = tumour_amounts(pipe, 3, steps=4, guidance=3.0, log=lambda line: None)
    pop = PhantomPopulation(seed=0, spacing_mm=3.5, shape=(48, 48, 48), p_wmh=0.0, p_tumour=1.0)
    names = ("tumour", "edema", "gdtumour")
    limits = {v.name: v.range[1] for v in pipe.card.conditioning.variables}
    for i, asked in enumerate(report["requested"]):
        own = pop.subject(HELD_OUT_START + i).lesion_fractions
        assert own["tumour"] + own["gdtumour"] > 0, f"held-out phantom {i} has a tumour"
        expected = [min(own[k], limits[k]) for k in names]
        assert asked == pytest.approx(expected), f"request {i} is its phantom's own tumour fractions"
    req, gen = np.array(report["requested"]), np.array(report["generated"])
    for j, k in enumerate(names):
        c = report["classes"][k]
        assert c["requested"] == int((req[:, j] > 0).sum()), f"{k}: samples that asked for it"
        assert c["median_ratio_generated_to_requested"] == pytest.approx(
            median_ratio(gen[:, j], req[:, j]), nan_ok=True
        ), f"{k}: median ratio over the samples that asked for it"
    assert (req[:, 0] > 0).all(), "every phantom tumour has a core (necrotic or non-enhancing)"
    r = np.corrcoef(np.log(req[:, 0]), np.log(np.maximum(gen[:, 0], 1e-5)))[0, 1]
    assert report["classes"]["tumour"]["log_pearson_r"] == pytest.approx(r, nan_ok=True), "core: log r"
    assert json.dumps(report, default=float), "the report is JSON"


def test_per_request_type_counts_clean_samples_ratios_and_missing_classes():
    def row(case, requested, fraction):
        return {"case": case, "requested": {**dict.fromkeys(LESIONS, 0.0), **requested}, "fraction": fraction}

    LESIONS = ("wmh", "tumour", "edema", "gdtumour")
    asked = {"tumour": 0.01, "edema": 0.02, "gdtumour": 0.01}
    rows = [
        row("tumour", asked, {"wmh": 0.0, "tumour": 0.0005, "edema": 0.02, "gdtumour": 0.01}),
        row("tumour", asked, {"wmh": 0.002, "tumour": 0.03, "edema": 0.01, "gdtumour": 0.01}),
        row("wmh", {"wmh": 0.02}, {"wmh": 0.03, "tumour": 0.0, "edema": 0.0, "gdtumour": 0.0}),
    ]
    table = per_request_type(rows)
    assert table["tumour"]["unrequested_below_0.1pct_samples"] == 0.5, "one of two tumour samples had WMH >= 0.1 %"
    assert table["tumour"]["unrequested_max_fraction"] == 0.002, "the largest unrequested fraction"
    assert table["tumour"]["requested_missing_samples"]["tumour"] == 0.5, "one core below a tenth of the request"
    assert table["tumour"]["requested_missing_samples"]["edema"] == 0.0, "edema made every time"
    assert table["tumour"]["median_ratio_generated_to_requested"]["tumour"] == pytest.approx(1.525), "median ratio"
    assert table["wmh"]["unrequested_below_0.1pct_samples"] == 1.0, "the WMH sample is clean"
