"""What researchers get from the Slicer logic beyond one brain: background runs from the console,
comparisons, measured volumes, provenance that survives saving, and model downloads - on real MRML
with the tiny models (a local HTTP server on 127.0.0.1 stands in for the weights' host)."""

from __future__ import annotations

import functools
import http.server
import json
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "SynthBrain"))

import slicer  # noqa: E402
from tiny_models import tiny_brain_card, write_model_folder  # noqa: E402

from SynthBrainLib.errors import SynthesisCancelled  # noqa: E402
from SynthBrainSlicer import logic as core  # noqa: E402
from SynthBrainSlicer.saving import sidecar_path  # noqa: E402


def scalar_volumes(scene) -> list:
    return [
        scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode")
        for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"))
    ]


def test_background_run_returns_at_once_and_its_result_adds_the_node(slicer_logic, mrml_app):
    run = slicer_logic.generateBrain(model="tiny-brain-ldm", seed=4, background=True)
    assert callable(run.cancel), "the handle cancels"
    assert 0.0 <= run.fraction <= 1.0, "and reports progress"
    node = run.result(timeout=120)
    assert node.GetAttribute("SynthBrain.Synthetic") == "true", "result() adds the synthetic volume"
    assert run.result() is node, "asking again gives the same node"


def test_background_runs_are_finished_by_the_main_thread_poll(slicer_logic, mrml_app):
    before = len(scalar_volumes(mrml_app.scene))
    run = slicer_logic.generateBrain(model="tiny-brain-ldm", seed=5, background=True)
    run.wait(120)
    assert slicer_logic.finishBackgroundRuns() == 0, "no run left"
    assert len(scalar_volumes(mrml_app.scene)) == before + 1, "the poll added the node without the script asking"


def test_cancelled_background_run_adds_nothing(slicer_logic, mrml_app):
    before = len(scalar_volumes(mrml_app.scene))
    run = slicer_logic.generateBrain(model="tiny-brain-ldm", seed=6, background=True)
    run.cancel()
    with pytest.raises(SynthesisCancelled):
        run.result(timeout=120)
    assert len(scalar_volumes(mrml_app.scene)) == before, "nothing added"


def test_compare_brains_uses_one_seed_and_gives_the_difference(slicer_logic):
    a, b, difference = slicer_logic.compareBrains({"age": 50}, {"age": 80}, model="tiny-brain-ldm", seed=7)
    arrays = [slicer.util.arrayFromVolume(n).astype(np.float64) for n in (a, b, difference)]
    assert np.allclose(arrays[2], arrays[1] - arrays[0], atol=1e-6), "difference = B - A"
    assert not np.allclose(arrays[0], arrays[1]), "the two conditions give different brains"
    same = slicer_logic.generateBrain(model="tiny-brain-ldm", age=50, seed=7)
    assert np.array_equal(slicer.util.arrayFromVolume(same), slicer.util.arrayFromVolume(a)), (
        "A is the brain generateBrain gives for A"
    )
    assert difference.GetAttribute("SynthBrain.Synthetic") == "true", "the difference is marked synthetic too"


def test_measured_volumes_are_kept_on_the_node(slicer_logic):
    node = slicer_logic.generateBrain(model="tiny-brain-ldm", seed=8, measure=True)
    measured = slicer_logic.measuredVolumes(node)
    assert set(measured) == {"ventricular_volume", "brain_volume"}, measured
    assert all(np.isfinite(v) and v >= 0 for v in measured.values()), measured


@pytest.mark.parametrize("name", ["brain.nrrd", "brain.nii.gz"])
def test_saving_a_result_writes_its_provenance_beside_the_file(slicer_logic, tmp_path, name):
    node = slicer_logic.generateBrain(model="tiny-brain-ldm", seed=9)
    storage = node.GetStorageNode()
    storage.SetFileName(str(tmp_path / name))
    assert storage.WriteData(node), "Slicer's storage node writes the volume"  # what the Save dialog does
    sidecar = json.loads((tmp_path / "brain.json").read_text())
    assert sidecar["synthetic"] is True, "the saved file is declared synthetic"
    assert sidecar["provenance"]["seed"] == 9, "with the provenance (seed, model, conditions)"
    assert sidecar["file"] == name, sidecar["file"]


def test_a_users_json_beside_the_file_is_never_replaced(slicer_logic, tmp_path):
    mine = tmp_path / "brain.json"
    mine.write_text('{"my": "notes"}')
    node = slicer_logic.generateBrain(model="tiny-brain-ldm", seed=10)
    node.GetStorageNode().SetFileName(str(tmp_path / "brain.nrrd"))
    node.GetStorageNode().WriteData(node)
    assert json.loads(mine.read_text()) == {"my": "notes"}, "the user's file is untouched"
    assert sidecar_path(tmp_path / "brain.nrrd").name == "brain.synthbrain.json", "the sidecar goes beside it"
    assert (tmp_path / "brain.synthbrain.json").is_file(), "and is written"


@pytest.fixture
def weights_server(tmp_path_factory):
    """A model folder served over HTTP on 127.0.0.1, and a card that points at it."""
    folder = write_model_folder(tiny_brain_card("served-brain"), tmp_path_factory.mktemp("served") / "served-brain")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _card_only(folder: Path, base_url: str, target: Path, corrupt: bool = False) -> Path:
    card = json.loads((folder / "card.json").read_text())
    card["weights_public"] = True
    for weight in card["weights"].values():
        weight["url"] = f"{base_url}/{weight['file']}"
        if corrupt:
            weight["sha256"] = "0" * 64
    target.mkdir(parents=True)
    (target / "card.json").write_text(json.dumps(card))
    return target


def test_download_fetches_checks_and_installs_public_weights(weights_server, mrml_app, tmp_path):
    from SynthBrainLib.models.store import ModelStore

    folder, url = weights_server
    store = ModelStore(
        home=tmp_path / "home", shipped=[_card_only(folder, url, tmp_path / "cards" / "served-brain").parent]
    )
    logic = core.SynthBrainLogic(scene=mrml_app.scene, store=store)
    assert not logic.modelStatus("served-brain").installed, "only the card is there"
    steps = []
    installed = logic.downloadModel("served-brain", progress=lambda done, total: steps.append((done, total)))
    assert installed.complete, "every weight file arrived"
    assert logic.modelStatus("served-brain").installed, "the panel's status follows"
    assert steps, "byte progress was reported"
    assert steps[-1][0] == steps[-1][1], f"byte progress ends at the total: {steps[-3:]}"
    assert steps[-1][1] > 0, f"of a known size: {steps[-3:]}"


def test_download_with_a_wrong_checksum_installs_nothing(weights_server, mrml_app, tmp_path):
    from SynthBrainLib.errors import CheckpointError
    from SynthBrainLib.models.store import ModelStore

    folder, url = weights_server
    store = ModelStore(
        home=tmp_path / "home",
        shipped=[_card_only(folder, url, tmp_path / "cards" / "served-brain", corrupt=True).parent],
    )
    logic = core.SynthBrainLogic(scene=mrml_app.scene, store=store)
    with pytest.raises(CheckpointError):
        logic.downloadModel("served-brain")
    assert not logic.modelStatus("served-brain").installed, "a mismatching file is not installed"


def test_cancelled_download_keeps_nothing_installed(weights_server, mrml_app, tmp_path):
    from SynthBrainLib.models.store import ModelStore

    folder, url = weights_server
    store = ModelStore(
        home=tmp_path / "home", shipped=[_card_only(folder, url, tmp_path / "cards" / "served-brain").parent]
    )
    logic = core.SynthBrainLogic(scene=mrml_app.scene, store=store)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(SynthesisCancelled):
        logic.downloadModel("served-brain", cancel=cancel)
    assert not logic.modelStatus("served-brain").installed, "nothing installed"
