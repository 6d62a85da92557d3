"""Static checks of the module panel: SynthBrain.py against Resources/UI/SynthBrain.ui.

SynthBrain.py needs the Slicer application (qt, ctk, slicer.parameterNodeWrapper), so it is read
with ``ast`` rather than imported: every widget the code touches must exist in the .ui with the
class the code expects, every parameter-node field must have a widget with that
``SlicerParameterName`` and a class Slicer's ``connectGui`` can bind to the field's type, and the
.ui must load with Qt's own loader (PySide6, offscreen).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MODULE = REPO / "SynthBrain" / "SynthBrain.py"
UI = REPO / "SynthBrain" / "Resources" / "UI" / "SynthBrain.ui"
SOURCE = MODULE.read_text(encoding="utf-8")
TREE = ast.parse(SOURCE)

#: Widget-name suffix -> the class a widget with that name must have (the code relies on it).
SUFFIX_CLASSES = [
    ("CollapsibleButton", {"ctkCollapsibleButton"}),
    ("GroupBox", {"ctkCollapsibleGroupBox"}),
    ("Button", {"QPushButton"}),
    ("Slider", {"ctkSliderWidget"}),
    ("SpinBox", {"QSpinBox"}),
    ("CheckBox", {"QCheckBox"}),
    ("Label", {"QLabel"}),
    ("Selector", {"QComboBox", "ctkComboBox", "qMRMLNodeComboBox"}),
    ("ProgressBar", {"QProgressBar"}),
    ("segmentEditorWidget", {"qMRMLSegmentEditorWidget"}),
]
#: Parameter type -> widget classes Slicer's connectGui (plus the module's own connector) binds.
TYPE_CLASSES = {
    "float": {"ctkSliderWidget", "QDoubleSpinBox"},
    "int": {"QSpinBox", "QSlider"},
    "bool": {"QCheckBox"},
    "enum": {"QComboBox"},
    "str": {"ctkComboBox"},  # model ids: SynthBrain.py's ModelComboBoxToStrConnector
    "node": {"qMRMLNodeComboBox"},
}


def expected_classes(name: str) -> set[str]:
    for suffix, classes in SUFFIX_CLASSES:
        if name.lower().endswith(suffix.lower()):
            return classes
    raise AssertionError(f"widget name {name!r} does not follow the naming convention ({', '.join(s for s, _ in SUFFIX_CLASSES)})")


# ---- .ui ---------------------------------------------------------------------------------------
def ui_widgets() -> dict[str, ET.Element]:
    root = ET.parse(UI).getroot()
    return {w.get("name"): w for w in root.iter("widget")}


def ui_property(widget: ET.Element, name: str):
    for prop in widget.findall("property"):
        if prop.get("name") == name:
            child = list(prop)[0]
            if child.tag == "stringlist":
                return [s.text for s in child.findall("string")]
            return child.text
    return None


def parameter_widgets() -> dict[str, ET.Element]:
    found = {}
    for name, widget in ui_widgets().items():
        param = ui_property(widget, "SlicerParameterName")
        if param is not None:
            assert param not in found, f"two widgets bind parameter {param!r}"
            found[param] = widget
    return found


# ---- SynthBrain.py ---------------------------------------------------------------------------
def module_class(name: str) -> ast.ClassDef:
    for node in TREE.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node
    raise AssertionError(f"SynthBrain.py has no class {name}")


def enum_classes() -> set[str]:
    return {n.name for n in TREE.body if isinstance(n, ast.ClassDef) and any(ast.unparse(b) == "enum.Enum" for b in n.bases)}


def wrapper_class() -> ast.ClassDef:
    found = [n for n in TREE.body if isinstance(n, ast.ClassDef) and any(ast.unparse(d) == "parameterNodeWrapper" for d in n.decorator_list)]
    assert len(found) == 1, "exactly one @parameterNodeWrapper class"
    return found[0]


def field_types() -> dict[str, tuple[str, ast.expr]]:
    """Parameter field -> (kind, annotation)."""
    enums = enum_classes()
    fields = {}
    for item in wrapper_class().body:
        if not isinstance(item, ast.AnnAssign):
            continue
        text = ast.unparse(item.annotation)
        if text.startswith("Annotated[float"):
            kind = "float"
        elif text.startswith("Annotated[int") or text == "int":
            kind = "int"
        elif text == "float":
            kind = "float"
        elif text == "str":
            kind = "str"
        elif text == "bool":
            kind = "bool"
        elif text in enums:
            kind = "enum"
        elif "vtkMRML" in text:
            kind = "node"
        else:
            raise AssertionError(f"unexpected parameter type {text}")
        fields[item.target.id] = (kind, item.annotation)
    return fields


def module_literal(name: str):
    for node in TREE.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in item.targets):
                    return ast.literal_eval(item.value)
    raise AssertionError(f"{name} not found in SynthBrain.py")


def widgets_used_in_code() -> set[str]:
    """``self.ui.X``, ``ui.X`` (ui = self.ui), and names looked up with ``getattr(self.ui, ...)``."""
    used = set()
    for node in ast.walk(TREE):
        if isinstance(node, ast.Attribute):
            owner = ast.unparse(node.value)
            if owner in ("self.ui", "ui"):
                used.add(node.attr)
    for table in ("BRAIN_CONDITIONS", "LESION_CONDITIONS"):
        for _, slider, label in module_literal(table).values():
            used |= {slider, label}
    used |= set(module_literal("RUN_BUTTONS"))
    return used


# ---------------------------------------------------------------------------------------------
def test_every_widget_the_code_uses_exists_with_the_expected_class():
    widgets = ui_widgets()
    used = widgets_used_in_code()
    assert len(used) > 30  # the scan found the panel code
    missing = sorted(used - set(widgets))
    assert not missing, f"SynthBrain.py uses widgets the .ui lacks: {missing}"
    for name in used:
        assert widgets[name].get("class") in expected_classes(name), f"{name} is a {widgets[name].get('class')}"


def test_widget_names_follow_the_convention():
    for name, widget in ui_widgets().items():
        if name == "SynthBrain":
            assert widget.get("class") == "qMRMLWidget"
            continue
        assert widget.get("class") in expected_classes(name), f"{name} is a {widget.get('class')}"


def test_every_parameter_has_a_bindable_widget_and_every_binding_a_parameter():
    fields = field_types()
    bound = parameter_widgets()
    assert len(fields) >= 20
    assert sorted(set(fields) - set(bound)) == [], "parameters without a widget"
    assert sorted(set(bound) - set(fields)) == [], "widgets bound to no parameter"
    for field, (kind, annotation) in fields.items():
        widget = bound[field]
        assert widget.get("class") in TYPE_CLASSES[kind], f"{field} ({kind}) is bound to a {widget.get('class')}"
        text = ast.unparse(annotation)
        if widget.get("class") == "ctkSliderWidget":
            assert "WithinRange" in text, f"{field}: a ctkSliderWidget needs bounds (connectGui refuses unbounded floats)"
        if kind == "node":
            node_types = set(ui_property(widget, "nodeTypes") or [])
            in_annotation = {part for part in node_types if part in text}
            assert node_types and in_annotation == node_types, f"{field}: nodeTypes {node_types} vs {text}"


def test_model_selectors_use_the_module_connector():
    connector = module_class("ModelComboBoxToStrConnector")
    assert any(ast.unparse(d) == "parameterNodeGuiConnector" for d in connector.decorator_list)
    can_represent = next(f for f in connector.body if isinstance(f, ast.FunctionDef) and f.name == "canRepresent")
    text = ast.unparse(can_represent)
    assert "ctk.ctkComboBox" in text and "str" in text
    # Built-in connectors match QComboBox exactly (and would demand a fixed Choice list for str):
    # the model selectors must therefore not be plain QComboBoxes.
    for field, (kind, _) in field_types().items():
        if kind == "str":
            assert parameter_widgets()[field].get("class") == "ctkComboBox"


def test_enums_match_the_published_cards():
    from SynthBrainLib.cards import SAMPLER_CLASSES, builtin_cards

    enums = {}
    for node in TREE.body:
        if isinstance(node, ast.ClassDef) and node.name in enum_classes():
            enums[node.name] = {a.targets[0].id: ast.literal_eval(a.value) for a in node.body if isinstance(a, ast.Assign)}
    cards = builtin_cards()
    assert set(enums["Sex"].values()) == set(cards["brain-ldm"].conditioning.variable("sex").choices)
    assert list(enums["MRSequence"].values()) == list(cards["brainspade3d-image"].sequences.names)
    assert set(enums["Sampler"].values()) - {"default"} == set(SAMPLER_CLASSES)
    assert set(enums["Device"].values()) == {"auto", "cpu", "cuda"}
    brain = cards["brain-ldm"].conditioning.names
    for field, (name, _, _) in module_literal("BRAIN_CONDITIONS").items():
        assert name in brain, field
    labels = cards["brainspade3d-labels"].conditioning.names
    assert sorted(name for name, _, _ in module_literal("LESION_CONDITIONS").values()) == sorted(labels)


def test_slider_ranges_are_not_hard_coded():
    """Slider ranges come from model cards (SynthBrainSlicer.logic.sliderSettings), never literals."""
    for node in ast.walk(TREE):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Attribute) and target.attr in ("minimum", "maximum", "singleStep", "decimals"):
                    assert not isinstance(node.value, ast.Constant), f"line {node.lineno}: {ast.unparse(node)}"


def test_custom_widgets_and_scene_connections_are_declared():
    root = ET.parse(UI).getroot()
    declared = {c.findtext("class"): (c.findtext("extends"), c.findtext("header")) for c in root.iter("customwidget")}
    used = {w.get("class") for w in ui_widgets().values()}
    for cls in used:
        if not cls.startswith("Q"):
            assert cls in declared and declared[cls][1] == f"{cls}.h", cls
    receivers = {c.findtext("receiver") for c in root.iter("connection") if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"}
    mrml_widgets = {n for n, w in ui_widgets().items() if w.get("class") in ("qMRMLNodeComboBox", "qMRMLSegmentEditorWidget")}
    assert mrml_widgets and mrml_widgets <= receivers


def test_ui_loads_with_qt():
    """Qt's own loader builds the panel (Slicer classes become their declared base classes)."""
    script = textwrap.dedent(f"""
        import sys
        from PySide6.QtCore import QFile
        from PySide6.QtUiTools import QUiLoader
        from PySide6.QtWidgets import QApplication, QWidget
        app = QApplication([])
        ui = QFile({str(UI)!r}); ui.open(QFile.ReadOnly)
        widget = QUiLoader().load(ui)
        assert widget is not None
        for line in sys.stdin.read().split():
            name, base, param = line.split(",")
            child = widget.findChild(QWidget, name)
            assert child is not None, name
            assert child.inherits(base), (name, base, child.metaObject().className())
            assert (child.property("SlicerParameterName") or "") == param, (name, param)
        print("ok")
    """)
    bases = {"ctkSliderWidget": "QWidget", "ctkComboBox": "QComboBox", "qMRMLNodeComboBox": "QWidget", "ctkCollapsibleButton": "QWidget",
             "ctkCollapsibleGroupBox": "QGroupBox", "qMRMLSegmentEditorWidget": "QWidget"}
    lines = []
    for name, widget in ui_widgets().items():
        if name != "SynthBrain":
            cls = widget.get("class")
            lines.append(f"{name},{bases.get(cls, cls)},{ui_property(widget, 'SlicerParameterName') or ''}")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    done = subprocess.run([sys.executable, "-c", script], input="\n".join(lines), capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


def test_module_file_loads_before_dependencies_are_installed():
    """Nothing heavy at import: Slicer must load the module (and offer to install torch) without torch."""
    top_imports = set()
    for node in TREE.body:
        if isinstance(node, ast.Import):
            top_imports |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            top_imports.add((node.module or "").split(".")[0])
    assert not top_imports & {"SynthBrainLib", "torch", "monai", "numpy"}, top_imports
    for path in (REPO / "SynthBrain" / "SynthBrainSlicer").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:  # module level only: deferred imports inside functions are fine
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                assert name.split(".")[0] not in {"SynthBrainLib", "torch", "monai", "qt", "ctk", "PythonQt", "PySide6"}, f"{path.name}: {name}"


def test_library_never_imports_slicer_qt_or_vtk():
    for path in (REPO / "SynthBrainLib").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            for name in names:
                assert name.split(".")[0] not in {"slicer", "qt", "ctk", "vtk", "vtkmodules", "PySide6", "PyQt5"}, f"{path}: {name}"


def test_self_test_runs_the_demo_models_end_to_end():
    test = module_class("SynthBrainTest")
    assert [ast.unparse(b) for b in test.bases] == ["ScriptedLoadableModuleTest"]
    text = ast.unparse(test)
    for demo in ("brain-ldm-demo", "labels-demo", "label2image-demo"):
        assert demo in text
    methods = {f.name for f in test.body if isinstance(f, ast.FunctionDef)}
    run_test = ast.unparse(next(f for f in test.body if isinstance(f, ast.FunctionDef) and f.name == "runTest"))
    for name in methods:
        if name.startswith("test_"):
            assert f"self.{name}" in run_test, f"runTest does not run {name}"
    for call in ("generateBrain", "ageSweep", "generateLabels", "synthesizeFromSegmentation", "updateSegmentBinaryLabelmapFromArray", "generateButton.click"):
        assert call in text, call


def test_logic_class_is_scriptable_and_wraps_the_parameter_node():
    logic = module_class("SynthBrainLogic")
    assert [ast.unparse(b) for b in logic.bases] == ["ScriptedLoadableModuleLogic", "core.SynthBrainLogic"]
    text = ast.unparse(logic)
    assert "SynthBrainParameterNode(super().getParameterNode())" in text
    for example in ("generateBrain(age=72, sex=\"female\", seed=3)", "generateLabels(wmh=0.03", "synthesizeFromSegmentation(labels, sequence=\"FLAIR\")", "ageSweep("):
        assert example in ast.get_docstring(logic), example


@pytest.mark.parametrize("name", ["_start", "_pollRun"])
def test_runs_go_through_a_background_thread(name):
    """The panel never computes on the UI thread: _start starts a BackgroundRun, a timer polls it."""
    widget = module_class("SynthBrainWidget")
    method = ast.unparse(next(f for f in widget.body if isinstance(f, ast.FunctionDef) and f.name == name))
    if name == "_start":
        assert "BackgroundRun(task).start()" in method and 'button.text = \'Cancel\'' in method and "self._run.cancel()" in method
    else:
        assert "run.finish()" in method and "progressBar.value" in method and "SynthesisCancelled" in method
