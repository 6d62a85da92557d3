"""Shared fixtures: an isolated model store and tiny model folders of every kind."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("OMP_NUM_THREADS", "2")

from tiny_models import (  # noqa: E402
    rflow_card,
    tiny_brain_card,
    tiny_labels_card,
    tiny_modality_card,
    tiny_spade_card,
    tiny_spade_ldm_card,
    write_modality_model,
    write_model_folder,
)


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A ModelStore in a temporary home with no shipped models (tests never touch ~/.cache)."""
    from SynthBrainLib.models.store import ModelStore

    home = tmp_path / "home"
    monkeypatch.setenv("SYNTHBRAIN_HOME", str(home))
    monkeypatch.setenv("SYNTHBRAIN_SHIPPED_MODELS", "")
    return ModelStore(home=home, shipped=[])


@pytest.fixture
def one_torch_thread():
    """The tiny networks gain nothing from threads, and 2 shared cores make them slower (modules that
    want it: ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def model_folders(tmp_path_factory):
    """Model folders (card.json + random weights) of every pipeline kind, built once per session."""
    base = tmp_path_factory.mktemp("models")
    return {
        "brain": write_model_folder(tiny_brain_card(), base / "tiny-brain-ldm"),
        "labels": write_model_folder(tiny_labels_card(), base / "tiny-labels"),
        "spade": write_model_folder(tiny_spade_card(), base / "tiny-spade"),
        "spade_ldm": write_model_folder(tiny_spade_ldm_card(), base / "tiny-spade-ldm"),
        "rflow": write_model_folder(rflow_card(), base / "tiny-rflow"),
        "modality": write_modality_model(tiny_modality_card(), base / "tiny-nv-generate"),
    }


# ---- Slicer module tests (Testing/test_slicer_*.py) --------------------------------------------
# Added for the SynthBrain Slicer module. slicer-core is imported inside the fixtures, so the
# library tests still run where it is not installed; the Slicer test files import it at the top
# and fail (not skip) without it.

REPO_ROOT = Path(__file__).resolve().parent.parent
MODULE_DIR = REPO_ROOT / "SynthBrain"


@pytest.fixture
def mrml_app():
    """A MRML scene wired like Slicer's: application logic with the Colors, Volumes,
    Segmentations, SubjectHierarchy and Sequences module logics, installed as ``slicer.mrmlScene``
    and ``slicer.modules.<name>.logic()`` (which ``slicer.util`` helpers need). Restored afterwards.

    Yields a namespace with ``scene`` and the logics (``volumes``, ``segmentations``, ``sequences``).
    """
    import types

    import slicer

    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    color_logic = app_logic.GetColorLogic()
    color_logic.SetMRMLScene(scene)
    color_logic.AddDefaultColorNodes()
    app_logic.SetModuleLogic("Colors", color_logic)

    def register(logic, name):
        logic.SetMRMLScene(scene)
        logic.SetMRMLApplicationLogic(app_logic)
        app_logic.SetModuleLogic(name, logic)
        return logic

    logics = {
        "volumes": register(slicer.vtkSlicerVolumesLogic(), "Volumes"),
        "segmentations": register(slicer.vtkSlicerSegmentationsModuleLogic(), "Segmentations"),
        "subjecthierarchy": register(slicer.vtkSlicerSubjectHierarchyModuleLogic(), "SubjectHierarchy"),
        "sequences": register(slicer.vtkSlicerSequencesLogic(), "Sequences"),
    }
    saved = {name: getattr(slicer, name) for name in ("mrmlScene", "modules") if hasattr(slicer, name)}
    slicer.mrmlScene = scene
    slicer.modules = types.SimpleNamespace(
        **{name: types.SimpleNamespace(logic=(lambda lg=logic: lg)) for name, logic in logics.items()}
    )
    # qSlicerSequencesModule.showSequenceBrowser (a static Q_INVOKABLE of the application): recorded.
    shown_browsers = []
    slicer.modules.sequences.showSequenceBrowser = lambda browser: shown_browsers.append(browser) or True
    try:
        yield types.SimpleNamespace(scene=scene, app_logic=app_logic, shown_browsers=shown_browsers, **logics)
    finally:
        for name in ("mrmlScene", "modules"):
            if name in saved:
                setattr(slicer, name, saved[name])
            elif hasattr(slicer, name):
                delattr(slicer, name)
        scene.Clear(1)


@pytest.fixture
def tiny_store(model_folders, tmp_path):
    """A ModelStore whose shipped models are the tiny model folders (empty user cache in tmp_path)."""
    from SynthBrainLib.models.store import ModelStore

    base = model_folders["brain"].parent
    return ModelStore(home=tmp_path / "synthbrain-home", shipped=[base])


def logic_on(mrml_app, store):
    """The module's SynthBrainLogic on the test scene with ``store``'s models, on the CPU."""
    if str(MODULE_DIR) not in sys.path:
        sys.path.insert(0, str(MODULE_DIR))
    from SynthBrainSlicer.logic import SynthBrainLogic

    logic = SynthBrainLogic(scene=mrml_app.scene, store=store, sequencesLogic=mrml_app.sequences)
    logic.device = "cpu"
    return logic


@pytest.fixture
def slicer_logic(mrml_app, tiny_store):
    """The module's SynthBrainLogic on the test scene, with the tiny models, on the CPU."""
    return logic_on(mrml_app, tiny_store)


# ---- Real scans (../shared/realdata: a real MS patient, a real FreeSurfer subject) --------------
REALDATA = REPO_ROOT.parent / "shared" / "realdata"


@pytest.fixture(scope="session")
def realdata():
    """The folder of real scans beside the checkout (CI has it); tests skip with one line without it."""
    if not REALDATA.is_dir():
        pytest.skip(f"real scans are not at {REALDATA} (../shared/realdata beside the checkout)")
    return REALDATA


@pytest.fixture
def demo_store(model_folders, tmp_path):
    """A ModelStore with the tiny models and the shipped demo models (label2image-demo has a
    template; brain-ldm-demo an age condition), and an empty user cache in tmp_path."""
    from SynthBrainLib.models.store import ModelStore, demo_models_dir

    return ModelStore(home=tmp_path / "home", shipped=[model_folders["brain"].parent, demo_models_dir()])


@pytest.fixture
def demo_logic(mrml_app, demo_store):
    """A console SynthBrainLogic on :func:`demo_store` in the MRML scene of :func:`mrml_app`, on the CPU."""
    return logic_on(mrml_app, demo_store)


@pytest.fixture
def demo_panel(monkeypatch, mrml_app, demo_store):
    """The module's panel on :func:`demo_store`, opened under Slicer's own parameterNodeWrapper."""
    import slicer_app

    if not slicer_app.REFERENCE_WRAPPER.is_dir():
        pytest.skip(slicer_app.REFERENCE_MISSING)
    with slicer_app.opened_panel(monkeypatch, mrml_app, demo_store) as panel:
        yield panel
