"""The Slicer module's SynthBrainLogic end to end on real MRML, with the tiny model folders.

Covers what the panel and the console do: conditioned brains, label templates, lesion painting on
a grid unlike the model's and the synthesised image aligned with it, the age-sweep sequence,
provenance, never overwriting nodes, and cancelling (also from a worker thread) leaving the scene
exactly as it was. slicer-core is required (see test_slicer_scene.py).
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

try:
    import slicer
except ImportError as exc:  # pragma: no cover - CI installs slicer-core; say how, do not skip
    raise ImportError(
        "slicer-core is required for the Slicer module tests: pip install -e .[test,slicer-test]"
    ) from exc

from test_slicer_scene import (
    MODEL_AFFINE,
    SCHEMA,
    USER_AFFINE,
    USER_SHAPE,
    VALUE,
    phantom_labels,
    snapshot,
    world_points,
)

from SynthBrainLib import load_pipeline  # noqa: E402
from SynthBrainLib.errors import ConditionError, ModelNotFoundError, SynthBrainError, SynthesisCancelled  # noqa: E402
from SynthBrainSlicer import environment  # noqa: E402
from SynthBrainSlicer import logic as core
from SynthBrainSlicer import scene as mrml
from SynthBrainSlicer.tasks import BackgroundRun, Task  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def painted_template(logic, scene):
    """A label template in model space with a tumour painted on the oblique user grid."""
    seg = mrml.labels_to_segmentation(scene, phantom_labels(), MODEL_AFFINE, SCHEMA, "template")
    user = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "user T1")
    mrml.fill_volume(user, np.zeros(USER_SHAPE, np.float32), USER_AFFINE)
    seg.SetReferenceImageGeometryParameterFromVolumeNode(user)
    painted = np.zeros(USER_SHAPE, np.uint8)
    painted[14:22, 7:15, 5:11] = 1  # off-centre on every axis: a flipped copy would not match
    slicer.util.updateSegmentBinaryLabelmapFromArray(painted.transpose(2, 1, 0), seg, "tumour", user)
    return seg, user, painted


class TumourEcho(torch.nn.Module):
    """Stands in for SPADENet: the 'image' is the tumour channel of the label map it receives.

    Run through the real LabelToImagePipeline, it shows where the model-space label map ends up
    after the pipeline's resampling to model space and back.
    """

    def __init__(self, channel: int) -> None:
        super().__init__()
        self.channel = channel

    def decode(self, seg, z):
        return seg[:, self.channel : self.channel + 1]


# ---------------------------------------------------------------------------------------------
def test_model_statuses_and_defaults(slicer_logic, model_folders):
    statuses = slicer_logic.listModels()
    ids = [s.id for s in statuses]
    installed = [s.id for s in statuses if s.installed]
    assert set(installed) == {
        "tiny-brain-ldm",
        "tiny-labels",
        "tiny-spade",
        "tiny-spade-ldm",
        "tiny-rflow",
        "tiny-nv-generate",
    }, f"installed tiny models: {installed}"
    assert ids[: len(installed)] == sorted(installed)  # installed first
    brain = slicer_logic.modelStatus("brain-ldm")
    assert not brain.installed, "brain-ldm is not installed in the test store"
    assert "model.pt" in brain.summary, f"the summary names the missing weights file: {brain.summary}"
    assert "not installed" in brain.summary, f"the summary says the model is not installed: {brain.summary}"
    tiny = slicer_logic.modelStatus("tiny-brain-ldm")
    assert tiny.location == "shipped", f"tiny-brain-ldm location {tiny.location}"
    assert str(model_folders["brain"]) in tiny.summary, f"the summary names the model folder: {tiny.summary}"
    assert "MB" in tiny.summary, f"the summary gives the model size: {tiny.summary}"
    assert [s.id for s in slicer_logic.listModels(core.LABELS_KIND)] == ["tiny-labels", "brainspade3d-labels"]
    assert slicer_logic.defaultModel(core.BRAIN_KIND) in {"tiny-brain-ldm", "tiny-rflow"}
    assert slicer_logic.defaultModel(core.LABELS_KIND) == "tiny-labels"
    with pytest.raises(ConditionError, match="label generator model, not a conditioned brain"):
        slicer_logic.brainTask(model="tiny-labels")


def test_generate_brain_matches_library_and_carries_provenance(slicer_logic, mrml_app, model_folders):
    steps = []
    node = slicer_logic.generateBrain(
        model="tiny-brain-ldm", age=70, sex="male", seed=5, progress=lambda s, t: steps.append((s, t))
    )
    expected = load_pipeline(str(model_folders["brain"]), device="cpu").generate(age=70, sex="male", seed=5)

    assert np.array_equal(mrml.volume_array(node), expected.image)
    assert np.allclose(mrml.volume_affine(node), expected.affine)
    assert steps[-1][0] == steps[-1][1], f"progress ends short of the total: {steps}"
    assert [s for s, _ in steps] == sorted(s for s, _ in steps), f"progress goes backwards: {steps}"
    name = node.GetName()
    assert "age 70 years" in name, f"the node name gives the age: {name}"
    assert "sex male" in name, f"the node name gives the sex: {name}"
    assert name.endswith("seed 5"), f"the node name ends with the seed: {name}"
    provenance = json.loads(node.GetAttribute("SynthBrain.Provenance"))
    assert provenance["synthetic"] is True, "provenance marks the image synthetic"
    assert provenance["seed"] == 5, f"provenance seed {provenance['seed']}"
    assert provenance["model"]["id"] == "tiny-brain-ldm"
    assert provenance["conditions"]["real_units"]["age"] == 70
    assert node.GetAttribute("SynthBrain.Synthetic") == "true"
    assert mrml.node_parent_folder_name(mrml_app.scene, node) == "SynthBrain"


def test_preview_uses_the_preview_sampler_and_repeats_come_from_the_cache(slicer_logic, mrml_app, model_folders):
    pipe = slicer_logic.pipeline("tiny-brain-ldm", "cpu")
    first = slicer_logic.generateBrain(model="tiny-brain-ldm", age=60, seed=2, device="cpu", preview=True)
    provenance = json.loads(first.GetAttribute("SynthBrain.Provenance"))
    assert (provenance["sampler"], provenance["steps"]) == pipe.preview_settings(None, None)
    expected = load_pipeline(str(model_folders["brain"]), device="cpu").generate(age=60, seed=2, preview=True)
    assert np.array_equal(mrml.volume_array(first), expected.image)

    calls = []
    unet = pipe.networks["diffusion"]
    handle = unet.register_forward_hook(lambda *a: calls.append(1))
    try:
        slicer_logic.generateBrain(model="tiny-brain-ldm", age=70, seed=2, device="cpu", preview=True)
        assert calls, "a new age must be computed"
        calls.clear()
        again = slicer_logic.generateBrain(
            model="tiny-brain-ldm", age=60, seed=2, device="cpu", preview=True
        )  # slider moved back
    finally:
        handle.remove()
    assert not calls, "a repeated preview is answered from the cache"
    assert again is not first, "a cached preview still makes a new node"
    assert np.array_equal(mrml.volume_array(again), mrml.volume_array(first))


def test_generate_labels_gives_schema_segmentation(slicer_logic, model_folders):
    seg = slicer_logic.generateLabels(model="tiny-labels", wmh=0.03, seed=4)
    expected = load_pipeline(str(model_folders["labels"]), device="cpu").generate(wmh=0.03, seed=4)
    labels, affine = mrml.segmentation_to_labels(seg, slicer_logic.card("tiny-labels").labels)
    assert np.array_equal(labels, expected.labels)
    assert np.allclose(affine, expected.affine)
    assert seg.GetSegmentation().GetNumberOfSegments() == 9
    assert "wmh 0.03" in seg.GetName(), f"the segmentation name gives the WMH load: {seg.GetName()}"
    assert seg.GetAttribute("SynthBrain.Synthetic") == "true", "the segmentation is marked synthetic"
    healthy = slicer_logic.generateLabels(model="tiny-labels", seed=4)
    assert "healthy" in healthy.GetName()


def test_synthesised_image_is_aligned_with_lesion_painted_on_other_geometry(mrml_app, tiny_store):
    """Voxel-level alignment through the real model-space round trip (resample in, synthesise, back)."""
    from SynthBrainLib.models.cards import ModelCard
    from SynthBrainLib.pipelines import LabelToImagePipeline

    card = ModelCard.from_dict(tiny_store.card("tiny-spade").to_dict())
    z = card.networks["generator"].kwargs["z_dim"]
    styles = {f"{s}.{k}": torch.zeros(z) for s in card.sequences.names for k in ("mean", "std")}
    echo = LabelToImagePipeline(
        card, {"generator": TumourEcho(VALUE["tumour"])}, device="cpu", tensors={card.sequences.weights: styles}
    )
    logic = core.SynthBrainLogic(
        scene=mrml_app.scene, store=tiny_store, pipelineLoader=lambda model, device, store, **options: echo
    )
    seg, user, painted = painted_template(logic, mrml_app.scene)

    image_node = logic.synthesizeFromSegmentation(seg, model="tiny-spade", sequence="FLAIR", seed=1)

    assert np.allclose(mrml.volume_affine(image_node), USER_AFFINE)
    assert image_node.GetImageData().GetDimensions() == USER_SHAPE
    image = mrml.volume_array(image_node)
    inside, far = painted > 0, np.ones(USER_SHAPE, bool)
    centre = world_points(USER_AFFINE, USER_SHAPE)[inside].mean(axis=0)
    far[np.linalg.norm(world_points(USER_AFFINE, USER_SHAPE) - centre, axis=-1) < 14] = False
    assert image[inside].mean() > 0.6
    assert image[far].max() < 0.05
    assert np.corrcoef(image.ravel(), inside.ravel())[0, 1] > 0.8
    # Same place, not a flipped or transposed copy: the image's centre of mass is the lesion's.
    weights = image / image.sum()
    com = np.tensordot(weights, world_points(USER_AFFINE, USER_SHAPE), axes=3)
    assert np.linalg.norm(com - centre) < 1.5


def test_synthesis_with_tiny_spade_on_painted_geometry(slicer_logic, mrml_app, model_folders):
    seg, user, painted = painted_template(slicer_logic, mrml_app.scene)
    shift = np.eye(4)
    shift[:3, 3] = [2.0, -1.0, 1.0]
    transform = mrml_app.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    transform.SetMatrixTransformToParent(mrml.vtk_matrix(shift))
    seg.SetAndObserveTransformNodeID(transform.GetID())

    node = slicer_logic.synthesizeFromSegmentation(seg, model="tiny-spade", sequence="flair", seed=8)

    labels, affine = mrml.segmentation_to_labels(seg, SCHEMA)
    assert np.all(labels[painted > 0] == VALUE["tumour"])
    expected = load_pipeline(str(model_folders["spade"]), device="cpu").generate(
        labels, affine=shift @ USER_AFFINE, sequence="FLAIR", seed=8
    )
    assert np.array_equal(mrml.volume_array(node), expected.image)
    assert np.allclose(mrml.volume_affine(node), USER_AFFINE)
    assert node.GetParentTransformNode() is transform  # displayed where the segmentation is
    provenance = json.loads(node.GetAttribute("SynthBrain.Provenance"))
    assert provenance["sequence"] == "FLAIR"
    assert np.allclose(provenance["input"]["affine"], shift @ USER_AFFINE, atol=1e-5)  # world coordinates
    assert provenance["input"]["labels_sha256"] == hashlib.sha256(np.ascontiguousarray(labels).tobytes()).hexdigest()
    assert provenance["slicer"] == {"segmentation": "template", "reference_volume": None}
    assert "FLAIR from template" in node.GetName()


def test_age_sweep_is_a_sequence_of_the_same_brain(slicer_logic, mrml_app, model_folders):
    steps = []
    sequence = slicer_logic.ageSweep(
        50, 80, 3, model="tiny-brain-ldm", seed=9, sex="female", progress=lambda s, t: steps.append((s, t))
    )
    pipe = load_pipeline(str(model_folders["brain"]), device="cpu")

    assert sequence.GetNumberOfDataNodes() == 3
    assert [sequence.GetNthIndexValue(i) for i in range(3)] == ["50", "65", "80"]
    assert sequence.GetIndexName() == "age", f"sequence index name {sequence.GetIndexName()}"
    assert sequence.GetIndexUnit() == "years", f"sequence index unit {sequence.GetIndexUnit()}"
    for index, age in enumerate((50, 65, 80)):
        item = sequence.GetNthDataNode(index)
        expected = pipe.generate(age=age, sex="female", seed=9)
        assert np.array_equal(mrml.volume_array(item), expected.image)
        assert json.loads(item.GetAttribute("SynthBrain.Provenance"))["seed"] == 9
    assert not np.array_equal(
        mrml.volume_array(sequence.GetNthDataNode(0)), mrml.volume_array(sequence.GetNthDataNode(2))
    )
    browser = mrml_app.scene.GetNodeByID(sequence.GetAttribute("SynthBrain.SequenceBrowser"))
    assert browser is not None, "the sweep has a sequence browser"
    assert browser.GetProxyNode(sequence) is not None, "the sequence browser shows the sweep through a proxy node"
    summary = json.loads(sequence.GetAttribute("SynthBrain.Provenance"))
    assert summary["sweep"]["values"] == [50.0, 65.0, 80.0], f"sweep values {summary['sweep']['values']}"
    assert summary["seed"] == 9, f"sweep seed {summary['seed']}"
    assert steps[-1][0] == steps[-1][1], f"progress ends short of the total: {steps[-1]}"
    assert steps[-1][1] == 3 * (steps[0][1] // 3), f"the total is not 3 brains' worth of steps: {steps[-1]}"


def test_cancel_leaves_scene_unchanged(slicer_logic, mrml_app):
    seg, _, _ = painted_template(slicer_logic, mrml_app.scene)
    before = snapshot(mrml_app.scene)
    tasks = [
        slicer_logic.brainTask(model="tiny-brain-ldm", seed=1),
        slicer_logic.labelsTask(model="tiny-labels", seed=1),
        slicer_logic.ageSweepTask(50, 80, 3, model="tiny-brain-ldm", seed=1),
        slicer_logic.synthesisTask(seg, model="tiny-spade-ldm", sequence="T2", seed=1),
    ]
    assert snapshot(mrml_app.scene) == before  # preparing a run reads the scene, changes nothing
    for task in tasks:
        cancel = threading.Event()
        with pytest.raises(SynthesisCancelled):
            task.run(lambda step, total: cancel.set(), cancel)
        assert snapshot(mrml_app.scene) == before, task.title


def test_background_run_cancelled_mid_computation(slicer_logic, mrml_app):
    before = snapshot(mrml_app.scene)
    task = slicer_logic.brainTask(model="tiny-brain-ldm", seed=2)
    first_step, release, threads = threading.Event(), threading.Event(), []

    def compute(progress, cancel):
        threads.append(threading.current_thread())

        def report(step, total):
            progress(step, total)
            first_step.set()
            release.wait(10)

        return task.compute(report, cancel)

    run = BackgroundRun(Task(task.title, compute, task.apply)).start()
    assert first_step.wait(30)
    assert 0 < run.fraction < 1
    run.cancel()
    release.set()
    assert run.wait(30)
    with pytest.raises(SynthesisCancelled):
        run.finish()
    assert threads[0] is not threading.main_thread()
    assert snapshot(mrml_app.scene) == before


def test_background_run_cancelled_after_computation_discards_result(slicer_logic, mrml_app):
    before = snapshot(mrml_app.scene)
    run = BackgroundRun(slicer_logic.brainTask(model="tiny-brain-ldm", seed=3)).start()
    assert run.wait(60)
    run.cancel()  # the user clicked Cancel just as it finished
    with pytest.raises(SynthesisCancelled):
        run.finish()
    assert snapshot(mrml_app.scene) == before


def test_background_run_applies_on_the_calling_thread(slicer_logic, mrml_app):
    task = slicer_logic.brainTask(model="tiny-brain-ldm", seed=4)
    where = {}

    def compute(progress, cancel):
        where["compute"] = threading.current_thread()
        return task.compute(progress, cancel)

    def apply(result):
        where["apply"] = threading.current_thread()
        return task.apply(result)

    run = BackgroundRun(Task(task.title, compute, apply)).start()
    assert run.wait(60), "the run finishes within 60 s"
    assert run.fraction == 1.0, f"a finished run reports fraction {run.fraction}"
    node = run.finish()
    assert where["compute"] is not threading.main_thread(), "compute runs on a worker thread"
    assert where["apply"] is threading.main_thread(), "apply runs on the calling (main) thread"
    assert mrml_app.scene.GetNodeByID(node.GetID()) is node
    failing = BackgroundRun(
        Task("fails", lambda p, c: (_ for _ in ()).throw(ConditionError("bad value")), task.apply)
    ).start()
    assert failing.wait(10)
    with pytest.raises(ConditionError, match="bad value"):
        failing.finish()


def test_results_never_overwrite_nodes(slicer_logic, mrml_app):
    first = slicer_logic.generateBrain(model="tiny-brain-ldm", age=60, seed=6)
    first_voxels = mrml.volume_array(first)
    first_attributes = first.GetAttribute("SynthBrain.Provenance")
    second = slicer_logic.generateBrain(model="tiny-brain-ldm", age=60, seed=6)
    third = slicer_logic.generateBrain(model="tiny-brain-ldm", age=61, seed=6)
    assert len({n.GetID() for n in (first, second, third)}) == 3
    assert len({n.GetName() for n in (first, second, third)}) == 3
    assert np.array_equal(mrml.volume_array(first), first_voxels)
    assert first.GetAttribute("SynthBrain.Provenance") == first_attributes
    assert np.array_equal(mrml.volume_array(second), first_voxels)  # same seed and conditions
    assert mrml_app.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 3


def test_user_errors_are_one_line_and_change_nothing(slicer_logic, mrml_app):
    seg, _, _ = painted_template(slicer_logic, mrml_app.scene)
    before = snapshot(mrml_app.scene)
    cases = [
        (lambda: slicer_logic.generateBrain(model="tiny-brain-ldm", age=120), ConditionError, "age"),
        (lambda: slicer_logic.generateBrain(model="no-such-model"), ModelNotFoundError, "no-such-model"),
        (lambda: slicer_logic.generateBrain(model="tiny-brain-ldm", sampler="rflow"), ConditionError, "rflow"),
        (lambda: slicer_logic.generateBrain(model="tiny-brain-ldm", device="cuda:7"), SynthBrainError, "cuda"),
        (
            lambda: slicer_logic.synthesizeFromSegmentation(seg, model="tiny-spade", sequence="DWI"),
            ConditionError,
            "DWI",
        ),
        (lambda: slicer_logic.synthesizeFromSegmentation(None, model="tiny-spade"), ConditionError, "segmentation"),
        (lambda: slicer_logic.ageSweep(50, 80, 1, model="tiny-brain-ldm"), ConditionError, "2 to 200"),
        (lambda: slicer_logic.ageSweep(30, 80, 3, model="tiny-brain-ldm"), ConditionError, "age"),
    ]
    for call, error, word in cases:
        with pytest.raises(error) as raised:
            call()
        message = str(raised.value)
        assert word in message, f"the message does not name {word!r}: {message}"
        assert "\n" not in message, f"the message is more than one line: {message}"
        assert snapshot(mrml_app.scene) == before


def test_reference_grid_is_kept_when_segmentation_and_reference_have_different_transforms(slicer_logic, mrml_app):
    from test_slicer_scene import rotation_z

    scene = mrml_app.scene
    seg, user, painted = painted_template(slicer_logic, scene)
    turn = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "turn")
    turn.SetMatrixTransformToParent(mrml.vtk_matrix(rotation_z(30)))
    same = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "identity")
    seg.SetAndObserveTransformNodeID(turn.GetID())
    user.SetAndObserveTransformNodeID(same.GetID())

    node = slicer_logic.synthesizeFromSegmentation(seg, model="tiny-spade", referenceVolumeNode=user, seed=1)

    assert node.GetImageData().GetDimensions() == USER_SHAPE
    # in world coordinates the result's grid is the reference's, voxel for voxel
    assert np.allclose(mrml.to_world(node, mrml.volume_affine(node)), mrml.to_world(user, USER_AFFINE), atol=1e-6)


def test_a_failing_apply_leaves_no_half_made_node(slicer_logic, mrml_app, monkeypatch):
    before = snapshot(mrml_app.scene)
    task = slicer_logic.ageSweepTask(50, 80, 2, model="tiny-brain-ldm", seed=1, steps=2)
    real = mrml.place_in_folder

    def fail_late(scene, node):
        real(scene, node)
        raise RuntimeError("disk full")

    monkeypatch.setattr(mrml, "place_in_folder", fail_late)  # after the sequence node exists
    with pytest.raises(RuntimeError, match="disk full"):
        task.run()
    monkeypatch.undo()
    after = [row[:3] for row in snapshot(mrml_app.scene)]
    assert after == [row[:3] for row in before], [r for r in after if r not in [b[:3] for b in before]]
    # numpy condition values (e.g. from a slider or an array) are stored as plain JSON
    sweep = slicer_logic.ageSweep(50, 80, 2, model="tiny-brain-ldm", seed=1, steps=2, ventricular_volume=np.float32(30))
    assert json.loads(sweep.GetAttribute("SynthBrain.Provenance"))["sweep"]["fixed"]["ventricular_volume"] == 30.0


def test_wrong_nodes_and_empty_paint_are_one_line_errors(slicer_logic, mrml_app):
    scene = mrml_app.scene
    seg, user, _ = painted_template(slicer_logic, scene)
    empty = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "nothing painted")
    empty.SetReferenceImageGeometryParameterFromVolumeNode(user)
    empty.GetSegmentation().AddEmptySegment("tumour", "tumour")
    before = snapshot(scene)
    cases = [
        (
            lambda: slicer_logic.synthesizeFromSegmentation(user, model="tiny-spade"),
            "select a segmentation to synthesise from (user T1 is a vtkMRMLScalarVolumeNode)",
        ),
        (
            lambda: slicer_logic.synthesizeFromSegmentation(seg, model="tiny-spade", referenceVolumeNode=seg),
            "the reference must be a scalar volume (template is a vtkMRMLSegmentationNode)",
        ),
        (
            lambda: slicer_logic.synthesizeFromSegmentation(empty, model="tiny-spade"),
            "segmentation nothing painted is empty on its grid; paint at least one segment",
        ),
        (
            lambda: slicer_logic.templateFromNode(None, model="tiny-spade"),
            "select a segmentation or a label-map volume",
        ),
        (
            lambda: slicer_logic.paintVolume(user, model="tiny-spade"),
            "select a segmentation to paint (user T1 is a vtkMRMLScalarVolumeNode)",
        ),
        (lambda: slicer_logic.ageSweep(60, 60, 3, model="tiny-brain-ldm"), "ages 60 to 60 in 3 steps are not distinct"),
    ]
    for call, message in cases:
        with pytest.raises(ConditionError) as raised:
            call()
        assert str(raised.value).startswith(message), str(raised.value)
        assert snapshot(scene) == before


def test_no_installed_model_of_a_kind(mrml_app, tmp_path):
    from SynthBrainLib.models.store import ModelStore

    logic = core.SynthBrainLogic(scene=mrml_app.scene, store=ModelStore(home=tmp_path, shipped=[]))
    with pytest.raises(ModelNotFoundError, match="no conditioned brain model is installed"):
        logic.generateBrain(age=70)


def test_pipeline_cache_and_import(slicer_logic, model_folders):
    first = slicer_logic.pipeline("tiny-brain-ldm", "cpu")
    assert slicer_logic.pipeline("tiny-brain-ldm", "cpu") is first
    installed = slicer_logic.importModel(model_folders["brain"])
    assert installed.card.id == "tiny-brain-ldm"
    assert slicer_logic.modelStatus("tiny-brain-ldm").location == "cache"  # statuses refreshed
    assert slicer_logic.pipeline("tiny-brain-ldm", "cpu") is not first  # cache dropped for that model


def test_templates_from_user_nodes(slicer_logic, mrml_app):
    scene = mrml_app.scene
    labels = phantom_labels(USER_AFFINE, USER_SHAPE)
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "atlas labels")
    mrml.fill_volume(labelmap, labels.astype(np.int16), USER_AFFINE)
    template = slicer_logic.templateFromNode(labelmap, model="tiny-spade")
    assert template.IsA("vtkMRMLSegmentationNode"), f"the template is a {template.GetClassName()}"
    assert "atlas labels" in template.GetName(), f"the template is named after its source: {template.GetName()}"
    assert np.array_equal(mrml.segmentation_to_labels(template, SCHEMA)[0], labels)
    copy = slicer_logic.templateFromNode(template)
    assert copy.GetID() != template.GetID()
    backdrop = slicer_logic.paintVolume(template)
    assert np.allclose(mrml.volume_affine(backdrop), USER_AFFINE)
    with pytest.raises(ConditionError, match="select a segmentation or a label-map volume"):
        slicer_logic.templateFromNode(scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "not labels"))


def test_library_location():
    assert environment.library_root() == REPO, "source checkout: SynthBrainLib is found in the repository root"
    assert environment.MODULE_DIR == REPO / "SynthBrain", "the module folder is SynthBrain/"
