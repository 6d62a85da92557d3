"""The panel against Slicer's own parameterNodeWrapper (5.12.3, from ../shared/slicer-reference).

Slicer's real connector registry decides which connector binds each parameter-node field to its
``.ui`` widget (built-in connectors first, then any the module registers, first ``canRepresent``
wins), Slicer's real ``connectGui`` binds them, and values must then flow both ways. Only the
widget classes are stand-ins (Testing/slicer_app.py). This is what failed on every Slicer since
5.8: ``QComboBoxToStringableConnector`` accepts ``ctkComboBox`` there and demands a ``Choice``.
"""

from __future__ import annotations

import enum
import typing

import pytest
import slicer_app

pytestmark = pytest.mark.skipif(not slicer_app.REFERENCE_WRAPPER.is_dir(), reason=slicer_app.REFERENCE_MISSING)


@pytest.fixture
def gui(monkeypatch, mrml_app):
    return slicer_app.install(monkeypatch, lambda: mrml_app.scene)


@pytest.fixture
def module(gui, monkeypatch):
    return slicer_app.import_module_file(monkeypatch)


@pytest.fixture
def node_class(module):
    """The parameter node class the module's logic wraps its node in (SynthBrainSlicer.parameters)."""
    import sys

    return sys.modules["SynthBrainSlicer.parameters"].SynthBrainParameterNode


@pytest.fixture
def parameters(module, mrml_app):
    logic = module.SynthBrainLogic(scene=mrml_app.scene)
    return logic.getParameterNode()


def leaf_names(node_class) -> set[str]:
    """Every value the node stores: plain fields, and each parameterPack's members as ``pack.member``."""
    names = set()
    for name, info in node_class.allParameters.items():
        kind = (
            typing.get_args(info.unalteredType)[0]
            if typing.get_origin(info.unalteredType) is typing.Annotated
            else info.unalteredType
        )
        members = getattr(kind, "allParameters", None)
        names |= {f"{name}.{m}" for m in members} if members else {name}
    return names


def bound_widgets(root) -> dict:
    """Parameter name -> widget, as Slicer's connectGui finds them (the SlicerParameterName property)."""
    return {
        w.property("SlicerParameterName"): w
        for w in root.findChildren(slicer_app.QWidget)
        if w.property("SlicerParameterName")
    }


def test_every_field_is_bound_by_slicer_or_synced_by_the_panel(module, node_class):
    """Model ids and a card's modality names (str, listed at run time) cannot go through connectGui on
    Slicer >= 5.8 (see the module docstring): exactly those are synced by the panel itself
    (SynthBrainSlicer.panel.ModelSelectors, SynthBrainSlicer.modality_panel.ChoiceSelector)."""
    fields = leaf_names(node_class)
    widgets = set(bound_widgets(slicer_app.load_ui()))
    synced = set(module.SynthBrainWidget.MODEL_SELECTORS) | set(module.SynthBrainWidget.CHOICE_SELECTORS)
    assert fields - widgets == synced, "parameter-node fields neither bound by connectGui nor synced by the panel"
    assert widgets - fields == set(), "widgets bound to a parameter the node does not have"


def test_the_parameter_node_is_grouped_in_packs(node_class):
    packs = {
        name for name in node_class.allParameters if "." not in name and name.islower() and not name.endswith("Model")
    }
    assert packs == {"conditions", "run", "sweep", "painting", "ageing", "modality"}, (
        f"the sections' parameter packs: {packs}"
    )


def test_slicers_own_lookup_finds_a_connector_for_every_field(module, gui, node_class):
    """createGuiConnector: Slicer's registry and lookup order, for every field and its widget."""
    wrapper = gui.wrapper
    chosen = {}
    for name, widget in bound_widgets(slicer_app.load_ui()).items():
        datatype = node_class.dataType(name)
        try:
            chosen[name] = type(wrapper.createGuiConnector(widget, datatype)).__name__
        except RuntimeError as exc:
            pytest.fail(f"Slicer 5.12.3 cannot bind {name} ({type(widget).__name__}): {exc}")
    age, sex, segmentation = chosen["conditions.age"], chosen["conditions.sex"], chosen["painting.segmentation"]
    assert age == "QDoubleSpinBoxCtkSliderWidgetToFloatIntConnector", f"age binds through {age}"
    assert sex == "QComboBoxToEnumConnector", f"sex binds through {sex}"
    assert segmentation == "qMRMLNodeComboBoxToNodeConnector", f"the painted segmentation binds through {segmentation}"
    size, spacing = chosen["modality.sizeX"], chosen["modality.spacingX"]
    assert size == "QSliderOrSpinBoxToIntConnector", f"an image's size binds through {size}"
    assert spacing == "QDoubleSpinBoxCtkSliderWidgetToFloatIntConnector", f"its spacing binds through {spacing}"


def test_connect_gui_binds_the_whole_panel(parameters):
    """The call the panel makes when it opens: parameterNode.connectGui(ui)."""
    root = slicer_app.load_ui()
    tag = parameters.connectGui(root)
    parameters.disconnectGui(tag)


def _other_value(datatype, current, widget):
    kind = typing.get_args(datatype)[0] if typing.get_origin(datatype) is typing.Annotated else datatype
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return next(member for member in kind if member != current)
    if kind is bool:
        return not current
    if kind in (int, float):
        return kind(widget.minimum + 1)
    return None  # MRML nodes: checked in the node test below


@pytest.mark.parametrize("direction", ["node to widget", "widget to node"])
def test_values_flow_both_ways_for_every_plain_field(parameters, direction):
    root = slicer_app.load_ui()
    widgets = bound_widgets(root)
    parameters.connectGui(root)
    checked = 0
    for name, widget in widgets.items():
        datatype = type(parameters).dataType(name)
        new = _other_value(datatype, parameters.getValue(name), widget)
        if new is None:
            continue
        checked += 1
        if direction == "node to widget":
            parameters.setValue(name, new)
            shown = (
                widget.value
                if hasattr(widget, "value")
                else widget.checked
                if hasattr(widget, "checked")
                else widget.currentText
            )
            expected = new.label() if isinstance(new, enum.Enum) else new
            assert shown == expected, f"{name}: the widget shows {shown!r} after the parameter became {new!r}"
        else:
            if isinstance(new, enum.Enum):
                widget.currentIndex = widget.findText(new.label())
            elif isinstance(new, bool):
                widget.checked = new
            else:
                widget.value = new
            assert parameters.getValue(name) == new, (
                f"{name}: the parameter is {parameters.getValue(name)!r} after the widget showed {new!r}"
            )
    assert checked >= 20, f"only {checked} fields were exercised"


def test_node_fields_follow_their_selectors(parameters, mrml_app):
    root = slicer_app.load_ui()
    widgets = bound_widgets(root)
    parameters.connectGui(root)
    segmentation = mrml_app.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "painting")
    widgets["painting.segmentation"].setCurrentNode(segmentation)
    assert parameters.painting.segmentation is segmentation, "choosing a segmentation in the selector sets the field"
    volume = mrml_app.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "scan")
    parameters.painting.reference = volume
    assert widgets["painting.reference"].currentNode() is volume, (
        "setting the painted-on volume shows it in its selector"
    )
