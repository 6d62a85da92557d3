"""SynthBrain.py itself, imported with small stand-ins for what only the Slicer application has.

qt, ctk, slicer.ScriptedLoadableModule and slicer.parameterNodeWrapper exist only inside Slicer.
With stand-ins for them, the real module file is executed here. That catches name errors in its
top level, and it lets the Qt-free pieces be tested for real: the model-selector connector, the
combo-box refill, the error sentences, and the module's Logic class (which subclasses Slicer's)
running on real MRML with the tiny models.
"""

from __future__ import annotations

import importlib.util
import sys
import types
import typing
import unittest
from pathlib import Path

import numpy as np
import pytest

try:
    import slicer
except ImportError as exc:  # pragma: no cover - CI installs slicer-core; say how, do not skip
    raise ImportError("slicer-core is required for the Slicer module tests: pip install -e .[test,slicer-test]") from exc

REPO = Path(__file__).resolve().parent.parent


class FakeComboBox:
    """The parts of QComboBox / ctkComboBox the module uses."""

    def __init__(self):
        self.items: list[tuple[str, object]] = []
        self.currentIndex = -1
        self.signalsBlocked = False

    @property
    def count(self):
        return len(self.items)

    def addItem(self, text, data=None):
        self.items.append((text, data))

    def clear(self):
        self.items.clear()
        self.currentIndex = -1

    def itemData(self, index):
        return self.items[index][1] if 0 <= index < len(self.items) else None

    def findData(self, data):
        return next((i for i, (_, d) in enumerate(self.items) if d == data), -1)

    def blockSignals(self, block):
        previous, self.signalsBlocked = self.signalsBlocked, block
        return previous


def _stand_ins():
    qt = types.ModuleType("qt")
    ctk = types.ModuleType("ctk")
    ctk.ctkComboBox = FakeComboBox

    slm = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent):
            self.parent = parent

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None):
            self.parent = parent

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent=None):
            super().__init__()
            self.moduleName = type(self).__name__[:-5]

        def getParameterNode(self):
            return "the scripted module node"

    slm.ScriptedLoadableModule = ScriptedLoadableModule
    slm.ScriptedLoadableModuleWidget = ScriptedLoadableModuleWidget
    slm.ScriptedLoadableModuleLogic = ScriptedLoadableModuleLogic
    slm.ScriptedLoadableModuleTest = unittest.TestCase

    pnw = types.ModuleType("slicer.parameterNodeWrapper")
    pnw.registered = []

    def parameterNodeWrapper(cls):
        def __init__(self, node=None):
            self.node = node

        cls.__init__ = __init__
        return cls

    class WithinRange:
        def __init__(self, minimum, maximum):
            self.minimum, self.maximum = minimum, maximum

    class GuiConnector:
        def __init__(self):
            pass

    def parameterNodeGuiConnector(cls):
        pnw.registered.append(cls)
        return cls

    def unannotatedType(datatype):
        return typing.get_args(datatype)[0] if typing.get_origin(datatype) is typing.Annotated else datatype

    pnw.parameterNodeWrapper = parameterNodeWrapper
    pnw.WithinRange = WithinRange
    pnw.GuiConnector = GuiConnector
    pnw.parameterNodeGuiConnector = parameterNodeGuiConnector
    pnw.unannotatedType = unannotatedType
    return {"qt": qt, "ctk": ctk, "slicer.ScriptedLoadableModule": slm, "slicer.parameterNodeWrapper": pnw}


@pytest.fixture
def module(monkeypatch):
    for name, stand_in in _stand_ins().items():
        monkeypatch.setitem(sys.modules, name, stand_in)
        if name.startswith("slicer."):
            monkeypatch.setattr(slicer, name.split(".", 1)[1], stand_in, raising=False)
    monkeypatch.syspath_prepend(str(REPO / "SynthBrain"))
    spec = importlib.util.spec_from_file_location("SynthBrain", REPO / "SynthBrain" / "SynthBrain.py")
    loaded = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "SynthBrain", loaded)
    spec.loader.exec_module(loaded)
    return loaded


def test_module_file_executes_and_registers_its_connector(module):
    assert module.ModelComboBoxToStrConnector in sys.modules["slicer.parameterNodeWrapper"].registered
    assert module.Sampler.DEFAULT.samplerName is None and module.Sampler.DDIM.samplerName == "ddim"
    assert [d.label() for d in module.Device] == ["Auto (GPU if present)", "CPU", "GPU (CUDA)"]
    assert issubclass(module.SynthBrainTest, unittest.TestCase)


def test_model_selector_connector(module):
    connector_class = module.ModelComboBoxToStrConnector
    combo = FakeComboBox()
    assert connector_class.canRepresent(combo, str) and connector_class.canRepresent(FakeComboBox, str)
    assert not connector_class.canRepresent(combo, int) and not connector_class.canRepresent(object(), str)
    combo.addItem("tiny-brain-ldm", "tiny-brain-ldm")
    combo.addItem("brain-ldm (not installed)", "brain-ldm")
    connector = connector_class.create(combo, str)
    connector.write("brain-ldm")
    assert combo.currentIndex == 1 and connector.read() == "brain-ldm"
    connector.write("from-another-computer")  # saved in a scene, not installed here: still shown
    assert combo.items[-1] == ("from-another-computer (not installed)", "from-another-computer")
    assert connector.read() == "from-another-computer"
    connector.write("")
    assert combo.currentIndex == -1 and connector.read() == ""


def test_fill_combo_keeps_the_selection_and_emits_nothing(module):
    combo = FakeComboBox()
    module._fillCombo(combo, [("a", "a"), ("b", "b")], "b")
    assert combo.currentIndex == 1 and not combo.signalsBlocked
    module._fillCombo(combo, [("a", "a")], "gone")
    assert combo.items[-1][1] == "gone" and combo.currentIndex == 1
    module._fillCombo(combo, [("a", "a")], "")
    assert combo.currentIndex == -1


def test_error_sentences(module):
    from SynthBrainLib.errors import ConditionError, ModelNotFoundError

    assert module.errorMessage(ConditionError("age 120 is outside 45–82 years")) == "Age 120 is outside 45–82 years."
    assert module.errorMessage(ModelNotFoundError("weights of brain-ldm are not installed.")) == "Weights of brain-ldm are not installed."
    unexpected = module.errorMessage(RuntimeError("boom\nTraceback details"))
    assert unexpected.startswith("SynthBrain failed unexpectedly (RuntimeError: boom)") and "\n" not in unexpected
    oom = type("OutOfMemoryError", (RuntimeError,), {})
    assert "GPU ran out of memory" in module.errorMessage(oom("CUDA out of memory. Tried to allocate 2 GiB"))
    assert module.isUserError(module.environment.DependencyError("no PyTorch"))


def test_module_logic_class_runs_on_mrml(module, mrml_app, tiny_store):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        logic = module.SynthBrainLogic(scene=mrml_app.scene, store=tiny_store, sequencesLogic=mrml_app.sequences)
        logic.device = "cpu"
        assert logic.moduleName == "SynthBrain"
        parameters = logic.getParameterNode()
        assert isinstance(parameters, module.SynthBrainParameterNode) and parameters.node == "the scripted module node"
        volume = logic.generateBrain(model="tiny-brain-ldm", age=72, sex="female", seed=3)
        sweep = logic.ageSweep(50, 80, 2, model="tiny-brain-ldm", seed=3)
    finally:
        torch.set_num_threads(threads)
    assert volume.GetAttribute("SynthBrain.Synthetic") == "true"
    assert sweep.GetNumberOfDataNodes() == 2
    assert np.isfinite(slicer.util.arrayFromVolume(volume)).all()


def test_age_sweep_lets_age_typical_volumes_follow_age(module):
    """With 'Volumes typical for each age' on, conditions that have a default_from are left unset."""
    from SynthBrainLib.cards import ModelCard
    from tiny_models import tiny_brain_card

    data = tiny_brain_card()
    data["conditioning"]["variables"][2]["default_from"] = {"intercept": -50.0, "coefficients": {"age": 1.0}}
    card = ModelCard.from_dict(data)
    calls = []
    widget = module.SynthBrainWidget.__new__(module.SynthBrainWidget)
    widget._parameterNode = types.SimpleNamespace(sweepAgeFrom=50.0, sweepAgeTo=80.0, sweepSteps=4, brainModel="tiny-brain-ldm", seed=3,
                                                  sampler=module.Sampler.DEFAULT, steps=5, sweepTypicalVolumes=True)
    widget.logic = types.SimpleNamespace(ageSweepTask=lambda *a, **k: calls.append((a, k)))
    widget._card = lambda field: card
    widget._brainConditions = lambda: {"age": 60.0, "sex": "female", "ventricular_volume": 20.0, "brain_volume": 1300.0}
    widget._sweepTask()
    assert "ventricular_volume" not in calls[-1][1] and calls[-1][1]["brain_volume"] == 1300.0 and "age" not in calls[-1][1]
    widget._parameterNode.sweepTypicalVolumes = False
    widget._sweepTask()
    assert calls[-1][1]["ventricular_volume"] == 20.0
