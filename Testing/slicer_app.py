"""Slicer's application side, for pytest: stand-ins for the *widget types* only, plus Slicer's own code.

What is real here:

* ``slicer`` is slicer-core (Slicer's MRML and module logics as wheels);
* ``slicer.parameterNodeWrapper``, ``slicer.ScriptedLoadableModule`` and ``slicer.i18n`` are Slicer's
  own files, loaded from ``../shared/slicer-reference`` (5.12.3 by default, or 5.10.0): the connector
  registry, lookup order and serializers, the module/widget/logic base classes, the translation;
* ``SynthBrain/SynthBrain.py`` and ``SynthBrain/Resources/UI/SynthBrain.ui`` are the module's files.

What is stood in: the Qt, CTK and qMRML widget classes (``qt``, ``ctk``, ``slicer.qMRML*``) with the
properties, signals and methods that Slicer's connectors and the panel use, behaving as Qt documents
them (a combo box selects its first item when one is added, spin boxes and sliders clamp to their
range, setting a value emits ``valueChanged`` only when it changes, ``blockSignals``), and the
application pieces a module file imports (``slicer.ScriptedLoadableModule``, ``slicer.i18n``,
``slicer.util.loadUI``). Widgets are built from the ``.ui`` file: its class names, object names and
dynamic properties (``SlicerParameterName``).

PythonQt exposes Qt properties as attributes (``combo.currentIndex = 2``) and drops surplus signal
arguments for slots that take fewer; the stand-ins do the same.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import sys
import types
import weakref
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODULE_DIR = REPO / "SynthBrain"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "SynthBrain.ui"
#: Slicer 5.12.3's Base/Python/slicer/parameterNodeWrapper (pure Python), provided beside the repository.
REFERENCE = REPO.parent / "shared" / "slicer-reference"
#: Slicer's Base/Python/slicer of each release the module supports (pure Python), beside the repository.
REFERENCE_SLICER = {
    "5.12.3": REFERENCE / "Base" / "Python" / "slicer",
    "5.10.0": REFERENCE / "v5.10.0" / "Base" / "Python" / "slicer",
}
REFERENCE_WRAPPER = REFERENCE_SLICER["5.12.3"] / "parameterNodeWrapper"
REFERENCE_MISSING = f"Slicer's own Python files are not at {REFERENCE} (../shared/slicer-reference)"


# ---- signals ---------------------------------------------------------------------------------------
def _arity(slot, given: int) -> int:
    try:
        parameters = inspect.signature(slot).parameters.values()
    except (TypeError, ValueError):
        return given
    if any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return given
    return min(
        given, sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty for p in parameters)
    )


class BoundSignal:
    def __init__(self, owner) -> None:
        self._owner = weakref.ref(owner)
        self._slots: list = []

    def connect(self, slot) -> None:
        self._slots.append(slot)

    def disconnect(self, slot=None) -> None:
        if slot is None:
            self._slots.clear()
        else:
            self._slots.remove(slot)  # like Qt, disconnecting what was never connected is an error

    def emit(self, *args) -> None:
        owner = self._owner()
        if owner is not None and owner._signalsBlocked:
            return
        for slot in list(self._slots):
            slot(*args[: _arity(slot, len(args))])


class Signal:
    """A Qt signal declared on a class; each widget gets its own connections."""

    def __set_name__(self, owner, name) -> None:
        self._key = "_signal_" + name

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        if self._key not in obj.__dict__:
            obj.__dict__[self._key] = BoundSignal(obj)
        return obj.__dict__[self._key]


# ---- qt ----------------------------------------------------------------------------------------------
class QObject:
    destroyed = Signal()

    def __init__(self, parent=None) -> None:
        self._parent = None
        self._children: list = []
        self._dynamic: dict = {}
        self._signalsBlocked = False
        self.objectName = ""
        if parent is not None:
            self.setParent(parent)

    def setParent(self, parent) -> None:
        if self._parent is not None:
            self._parent._children.remove(self)
        self._parent = parent
        if parent is not None:
            parent._children.append(self)

    def parent(self):
        return self._parent

    def children(self) -> list:
        return list(self._children)

    def findChildren(self, cls) -> list:
        found = []
        for child in self._children:
            if isinstance(child, cls):
                found.append(child)
            found.extend(child.findChildren(cls))
        return found

    def property(self, name):
        return self._dynamic.get(name)

    def setProperty(self, name, value) -> None:
        self._dynamic[name] = value

    def blockSignals(self, block: bool) -> bool:
        previous, self._signalsBlocked = self._signalsBlocked, bool(block)
        return previous

    def signalsBlocked(self) -> bool:
        return self._signalsBlocked


class QWidget(QObject):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.enabled = True
        self.visible = True
        self.toolTip = ""
        self._layout = None

    def setLayout(self, layout) -> None:
        self._layout = layout

    def layout(self):
        return self._layout

    def isWidgetType(self) -> bool:
        return True

    def show(self) -> None:
        self.visible = True

    def hide(self) -> None:
        self.visible = False

    def setVisible(self, visible: bool) -> None:
        self.visible = bool(visible)


class QLabel(QWidget):
    def __init__(self, text_or_parent=None, parent=None) -> None:
        text = text_or_parent if isinstance(text_or_parent, str) else ""
        super().__init__(parent if isinstance(text_or_parent, str) else text_or_parent)
        self.text = text
        self.wordWrap = False


class QAbstractButton(QWidget):
    clicked = Signal()
    toggled = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.text = ""
        self.checkable = False
        self._checked = False

    @property
    def checked(self) -> bool:
        return self._checked

    @checked.setter
    def checked(self, value: bool) -> None:
        value = bool(value)
        if value != self._checked:
            self._checked = value
            self._checkedChanged(value)

    def _checkedChanged(self, value: bool) -> None:
        self.toggled.emit(value)

    def click(self) -> None:
        if not self.enabled:
            return
        if self.checkable:
            self.checked = not self.checked
        self.clicked.emit(self.checked)


class QPushButton(QAbstractButton):
    def setMenu(self, menu) -> None:
        self.menu = menu


class QCheckBox(QAbstractButton):
    stateChanged = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.checkable = True

    def _checkedChanged(self, value: bool) -> None:
        self.stateChanged.emit(2 if value else 0)
        self.toggled.emit(value)


class QComboBox(QWidget):
    currentIndexChanged = Signal()
    activated = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._items: list[list] = []
        self._current = -1

    @property
    def count(self) -> int:
        return len(self._items)

    @property
    def currentIndex(self) -> int:
        return self._current

    @currentIndex.setter
    def currentIndex(self, index: int) -> None:
        index = int(index) if 0 <= int(index) < len(self._items) else -1
        if index != self._current:
            self._current = index
            self.currentIndexChanged.emit(index)

    @property
    def currentText(self) -> str:
        return self._items[self._current][0] if self._current >= 0 else ""

    def setCurrentIndex(self, index: int) -> None:
        self.currentIndex = index

    def addItem(self, text, data=None) -> None:
        self._items.append([str(text), data])
        if self._current < 0:
            self.currentIndex = 0

    def clear(self) -> None:
        self._items.clear()
        self.currentIndex = -1

    def itemText(self, index: int) -> str:
        return self._items[index][0] if 0 <= index < len(self._items) else ""

    def itemData(self, index: int):
        return self._items[index][1] if 0 <= index < len(self._items) else None

    def findData(self, data) -> int:
        return next((i for i, (_, d) in enumerate(self._items) if d == data), -1)

    def findText(self, text) -> int:
        return next((i for i, (t, _) in enumerate(self._items) if t == text), -1)

    def choose(self, index: int) -> None:
        """What a user's click does: select the item, then emit ``activated``."""
        self.currentIndex = index
        self.activated.emit(index)


class _Ranged(QWidget):
    """Spin boxes and sliders: a value clamped to [minimum, maximum], ``valueChanged`` on change."""

    valueChanged = Signal()
    _cast = float

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._minimum, self._maximum, self._value = self._cast(0), self._cast(99), self._cast(0)
        self.singleStep = self._cast(1)
        self.decimals = 2
        self.suffix = ""
        self.prefix = ""

    def _normalise(self, value):
        value = min(max(self._cast(value), self._minimum), self._maximum)
        return round(value, self.decimals) if self._cast is float else value

    @property
    def value(self):
        return self._value

    @value.setter
    def value(self, value) -> None:
        value = self._normalise(value)
        if value != self._value:
            self._value = value
            self.valueChanged.emit(value)

    @property
    def minimum(self):
        return self._minimum

    @minimum.setter
    def minimum(self, value) -> None:
        self._minimum = self._cast(value)
        self._maximum = max(self._maximum, self._minimum)
        self.value = self._value

    @property
    def maximum(self):
        return self._maximum

    @maximum.setter
    def maximum(self, value) -> None:
        self._maximum = self._cast(value)
        self._minimum = min(self._minimum, self._maximum)
        self.value = self._value

    def setMinimum(self, value) -> None:
        self.minimum = value

    def setMaximum(self, value) -> None:
        self.maximum = value

    def setRange(self, minimum, maximum) -> None:
        self._minimum, self._maximum = self._cast(minimum), self._cast(max(minimum, maximum))
        self.value = self._value

    def setValue(self, value) -> None:
        self.value = value


class QSpinBox(_Ranged):
    _cast = int


class QSlider(_Ranged):
    _cast = int


class QDoubleSpinBox(_Ranged):
    pass


class QProgressBar(QWidget):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.value, self.minimum, self.maximum = 0, 0, 100


class QLineEdit(QWidget):
    textChanged = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.text = ""


class QTextEdit(QWidget):
    textChanged = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.plainText = ""


class QGroupBox(QWidget):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.title = ""
        self.checkable = False
        self.checked = False


class QColor:
    def __init__(self, *args) -> None:
        self.args = args


class QIcon:
    def __init__(self, path: str = "") -> None:
        self.path = path


class QTimer(QObject):
    """Timers fire when the application processes events (``slicer.app.processEvents()``)."""

    timeout = Signal()
    running: "weakref.WeakSet[QTimer]" = weakref.WeakSet()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.interval, self.active = 0, False
        QTimer.running.add(self)

    @classmethod
    def fire_active(cls) -> None:
        """What Qt's event loop does for the timers whose interval has passed: emit their timeouts."""
        for timer in list(cls.running):
            if timer.active:
                timer.timeout.emit()

    def setInterval(self, msec: int) -> None:
        self.interval = msec

    def start(self, msec: int | None = None) -> None:
        self.active = True

    def stop(self) -> None:
        self.active = False


class QAction(QObject):
    triggered = Signal()

    def __init__(self, text="", parent=None) -> None:
        super().__init__(parent)
        self.text = text


class QMenu(QWidget):
    def addAction(self, text) -> QAction:
        return QAction(text, self)


class _Layout:
    def __init__(self, parent=None) -> None:
        self.widgets: list = []

    def addWidget(self, widget, *args) -> None:
        self.widgets.append(widget)


class QVBoxLayout(_Layout):
    pass


class QFormLayout(_Layout):
    pass


class _Qt:
    WaitCursor = 3


# ---- ctk -------------------------------------------------------------------------------------------
class ctkComboBox(QComboBox):
    pass


class ctkSliderWidget(_Ranged):
    pass


class ctkDoubleSlider(_Ranged):
    pass


class ctkDoubleSpinBox(_Ranged):
    pass


class ctkCheckBox(QCheckBox):
    pass


class ctkCheckablePushButton(QPushButton):
    pass


class ctkCollapsibleButton(QAbstractButton):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.collapsed = False


class ctkCollapsibleGroupBox(QGroupBox):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.collapsed = False


class ctkRangeWidget(QWidget):
    pass


class ctkDoubleRangeSlider(QWidget):
    pass


class ctkPathLineEdit(QWidget):
    pass


class ctkDirectoryButton(QWidget):
    pass


class ctkColorPickerButton(QWidget):
    pass


# ---- qMRML -------------------------------------------------------------------------------------------
class qMRMLWidget(QWidget):
    mrmlSceneChanged = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._scene = None

    def setMRMLScene(self, scene) -> None:
        self._scene = scene
        self.mrmlSceneChanged.emit(scene)

    def mrmlScene(self):
        return self._scene


class qSlicerWidget(qMRMLWidget):
    pass


class qMRMLNodeComboBox(qMRMLWidget):
    """Lists the scene's nodes of ``nodeTypes``; a node of another class cannot become current."""

    currentNodeChanged = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.nodeTypes: tuple = ()
        self.noneEnabled = True
        self._node = None

    def currentNode(self):
        return self._node

    def setCurrentNode(self, node) -> None:
        if node is not None and not any(node.IsA(t) for t in self.nodeTypes):
            node = None
        if node is not self._node:
            self._node = node
            self.currentNodeChanged.emit(node)


class qMRMLSliderWidget(ctkSliderWidget):
    pass


class qMRMLSpinBox(ctkDoubleSpinBox):
    pass


class qMRMLRangeWidget(ctkRangeWidget):
    pass


class qMRMLSegmentEditorWidget(qMRMLWidget):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._segmentation = self._source = self._editorNode = None
        self.calls: list = []

    def setMRMLSegmentEditorNode(self, node) -> None:
        self._editorNode = node

    def mrmlSegmentEditorNode(self):
        return self._editorNode

    def setSegmentationNode(self, node) -> None:
        self._segmentation = node

    def segmentationNode(self):
        return self._segmentation

    def setSourceVolumeNode(self, node) -> None:
        self._source = node

    def sourceVolumeNode(self):
        return self._source

    def __getattr__(self, name):  # setActiveEffect, install/uninstallKeyboardShortcuts, ...
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args: self.calls.append((name, args))


QT_CLASSES = [
    QObject,
    QWidget,
    QLabel,
    QAbstractButton,
    QPushButton,
    QCheckBox,
    QComboBox,
    QSpinBox,
    QSlider,
    QDoubleSpinBox,
    QProgressBar,
    QLineEdit,
    QTextEdit,
    QGroupBox,
    QColor,
    QIcon,
    QTimer,
    QAction,
    QMenu,
    QVBoxLayout,
    QFormLayout,
]
CTK_CLASSES = [
    ctkComboBox,
    ctkSliderWidget,
    ctkDoubleSlider,
    ctkDoubleSpinBox,
    ctkCheckBox,
    ctkCheckablePushButton,
    ctkCollapsibleButton,
    ctkCollapsibleGroupBox,
    ctkRangeWidget,
    ctkDoubleRangeSlider,
    ctkPathLineEdit,
    ctkDirectoryButton,
    ctkColorPickerButton,
]
MRML_WIDGET_CLASSES = [
    qMRMLWidget,
    qSlicerWidget,
    qMRMLNodeComboBox,
    qMRMLSliderWidget,
    qMRMLSpinBox,
    qMRMLRangeWidget,
    qMRMLSegmentEditorWidget,
]
WIDGET_CLASSES = {cls.__name__: cls for cls in [*QT_CLASSES, *CTK_CLASSES, *MRML_WIDGET_CLASSES]}


# ---- .ui -----------------------------------------------------------------------------------------------
def _ui_value(element: ET.Element):
    child = list(element)[0]
    if child.tag == "bool":
        return child.text == "true"
    if child.tag == "number":
        return int(child.text)
    if child.tag == "double":
        return float(child.text)
    if child.tag == "stringlist":
        return tuple(s.text or "" for s in child.findall("string"))
    return child.text or ""


#: .ui properties copied onto the stand-ins (layout, geometry and font properties are Qt's business).
_COPIED = {
    "text",
    "checkable",
    "checked",
    "toolTip",
    "enabled",
    "decimals",
    "singleStep",
    "suffix",
    "nodeTypes",
    "noneEnabled",
    "collapsed",
    "title",
}
_RANGE_ORDER = ("minimum", "maximum", "value")


def load_ui(path: Path = UI_FILE) -> QWidget:
    """Build the widget tree of a Qt Designer file with the stand-in classes (unknown classes fail)."""

    def build(element: ET.Element, parent):
        cls = WIDGET_CLASSES.get(element.get("class"))
        if cls is None:
            raise AssertionError(
                f"{path.name}: no stand-in for widget class {element.get('class')} ({element.get('name')})"
            )
        widget = cls(parent)
        widget.objectName = element.get("name")
        properties = {p.get("name"): (p, p.get("stdset") == "0") for p in element.findall("property")}
        for name in sorted(properties, key=lambda n: _RANGE_ORDER.index(n) if n in _RANGE_ORDER else -1):
            prop, dynamic = properties[name]
            if dynamic:
                widget.setProperty(name, _ui_value(prop))
            elif name in _COPIED or name in _RANGE_ORDER:
                setattr(widget, name, _ui_value(prop))
        if isinstance(widget, QComboBox):
            for item in element.findall("item"):
                widget.addItem(_ui_value(item.find("property")))
        for child in _child_widgets(element):
            build(child, widget)
        return widget

    root = ET.parse(path).getroot().find("widget")
    return build(root, None)


def _child_widgets(element: ET.Element):
    """The <widget> elements directly below ``element`` (through layouts and items, not other widgets)."""
    for child in element:
        if child.tag == "widget":
            yield child
        elif child.tag in ("layout", "item"):
            yield from _child_widgets(child)


def child_widget_variables(widget) -> types.SimpleNamespace:
    """``slicer.util.childWidgetVariables``: every named child as an attribute."""
    return types.SimpleNamespace(**{w.objectName: w for w in widget.findChildren(QWidget) if w.objectName})


# ---- modules ---------------------------------------------------------------------------------------------
def _module(name: str, classes, **extra) -> types.ModuleType:
    module = types.ModuleType(name)
    for cls in classes:
        setattr(module, cls.__name__, cls)
    for key, value in extra.items():
        setattr(module, key, value)
    return module


def load_reference(name: str, release: str = "5.12.3") -> types.ModuleType:
    """Slicer's own ``slicer.<name>`` module of ``release``, executed from the reference folder."""
    spec = importlib.util.spec_from_file_location(f"slicer.{name}", REFERENCE_SLICER[release] / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[f"slicer.{name}"] = module
    spec.loader.exec_module(module)
    return module


class ModuleManager:
    """``slicer.app.moduleManager()``: the widget base class connects to its unload signal."""

    def __init__(self) -> None:
        self.connections: list = []

    def connect(self, signal, slot) -> None:
        self.connections.append((signal, slot))

    def disconnect(self, signal, slot) -> None:
        self.connections.remove((signal, slot))


def load_reference_wrapper(release: str = "5.12.3") -> types.ModuleType:
    """Slicer's ``slicer.parameterNodeWrapper`` package of ``release``, executed from the reference folder."""
    folder = REFERENCE_SLICER[release] / "parameterNodeWrapper"
    spec = importlib.util.spec_from_file_location(
        "slicer.parameterNodeWrapper", folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    package = importlib.util.module_from_spec(spec)
    sys.modules["slicer.parameterNodeWrapper"] = package
    spec.loader.exec_module(package)
    return package


#: The module's Qt-free helpers, imported once outside the harness (bound to the plain ``_`` that is
#: used where Slicer's application is absent); each harness test imports its own copies, bound to the
#: reference release it installs, and the plain ones come back afterwards.
PLAIN_MODULES = ("choices", "dependencies", "environment", "logic", "panel", "runs", "views", "compatibility")


def install(monkeypatch, scene_getter, release: str = "5.12.3", slicer_version=None) -> types.SimpleNamespace:
    """Put the stand-in widget modules and Slicer's own files of ``release`` in place (undone by monkeypatch).

    ``slicer_version``: what ``slicer.app`` reports as (major, minor) (default: the release's).
    Returns a namespace with ``qt``, ``ctk``, ``wrapper`` (Slicer's package), ``app`` and ``dialogs`` (what
    the code asked the user, as (kind, text) tuples; every question is answered ``answer``).
    """
    import slicer
    import slicer.util

    monkeypatch.syspath_prepend(str(MODULE_DIR))
    for name in PLAIN_MODULES:
        importlib.import_module(f"SynthBrainSlicer.{name}")
    for name in [n for n in sys.modules if n.split(".")[0] == "SynthBrainSlicer"]:
        monkeypatch.delitem(sys.modules, name)
    major, minor = slicer_version or tuple(int(x) for x in release.split(".")[:2])
    layouts = types.SimpleNamespace(layout=None)
    layouts.setLayout = lambda layout: setattr(layouts, "layout", layout)
    app = types.SimpleNamespace(
        majorVersion=major,
        minorVersion=minor,
        layoutManager=lambda: layouts,
        translate=lambda context, text: text,
        testingEnabled=lambda: False,
        commandOptions=lambda: types.SimpleNamespace(testingEnabled=False),
        processEvents=QTimer.fire_active,
    )
    manager = ModuleManager()
    app.moduleManager = lambda: manager
    monkeypatch.setattr(slicer, "app", app, raising=False)
    qt = _module("qt", QT_CLASSES, Qt=_Qt, QInputDialog=None, QFileDialog=None)
    ctk = _module("ctk", CTK_CLASSES)
    monkeypatch.setitem(sys.modules, "qt", qt)
    monkeypatch.setitem(sys.modules, "ctk", ctk)
    for cls in MRML_WIDGET_CLASSES:
        monkeypatch.setattr(slicer, cls.__name__, cls, raising=False)
    state = types.SimpleNamespace(qt=qt, ctk=ctk, app=app, dialogs=[], answer=True)

    def ask(kind):
        def dialog(text, *args, **kwargs):
            state.dialogs.append((kind, text))
            return state.answer

        return dialog

    monkeypatch.setattr(slicer.util, "loadUI", lambda path: load_ui(Path(path)), raising=False)
    monkeypatch.setattr(slicer.util, "childWidgetVariables", child_widget_variables, raising=False)
    monkeypatch.setattr(slicer.util, "settingsValue", lambda key, default, **kwargs: default, raising=False)
    monkeypatch.setattr(slicer.util, "modulePath", lambda name: str(MODULE_DIR / f"{name}.py"), raising=False)
    for kind in ("errorDisplay", "infoDisplay", "warningDisplay"):
        monkeypatch.setattr(slicer.util, kind, ask(kind), raising=False)
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", ask("confirmOkCancelDisplay"), raising=False)
    monkeypatch.setattr(slicer.util, "confirmYesNoDisplay", ask("confirmYesNoDisplay"), raising=False)
    monkeypatch.setattr(
        slicer.util,
        "setSliceViewerLayers",
        lambda **kwargs: state.dialogs.append(("setSliceViewerLayers", kwargs)),
        raising=False,
    )
    monkeypatch.setattr(slicer.util, "restart", lambda: state.dialogs.append(("restart", None)), raising=False)
    state.reloaded = []
    monkeypatch.setattr(slicer.util, "reloadScriptedModule", state.reloaded.append, raising=False)
    state.layoutManager = layouts
    # Slicer's own modules, fresh per test (the wrapper registers connectors in module-level lists).
    for name in [n for n in sys.modules if n.split(".")[:2] in (["slicer", "parameterNodeWrapper"],)]:
        monkeypatch.delitem(sys.modules, name)
    for name in ("i18n", "ScriptedLoadableModule"):
        monkeypatch.setitem(sys.modules, f"slicer.{name}", None)  # restored afterwards; replaced next line
        monkeypatch.setattr(slicer, name, load_reference(name, release), raising=False)
    state.wrapper = load_reference_wrapper(release)
    monkeypatch.setattr(slicer, "parameterNodeWrapper", state.wrapper, raising=False)
    return state


def import_module_file(
    monkeypatch, name: str = "SynthBrain", path: Path = MODULE_DIR / "SynthBrain.py"
) -> types.ModuleType:
    """Execute a module file as Slicer does (its folder on sys.path), under ``name`` in sys.modules."""
    monkeypatch.syspath_prepend(str(path.parent))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


def module_panel_parent():
    """What Slicer hands a module widget: a qMRML widget with a layout, which knows whether the
    module is shown (``isEntered``)."""
    parent = qMRMLWidget()
    parent.setLayout(QVBoxLayout())
    parent.isEntered = False
    return parent


def finish(widget, timeout: float = 120.0) -> None:
    """What the panel's timer does until the run has ended."""
    while widget.runs.running:
        widget.runs.run.wait(timeout)
        widget._pollRun()


def nodes(scene, class_name: str) -> list:
    """The scene's nodes of ``class_name``, in the order they were added."""
    return [scene.GetNthNodeByClass(i, class_name) for i in range(scene.GetNumberOfNodesByClass(class_name))]


@contextlib.contextmanager
def opened_panel(monkeypatch, mrml_app, store, release: str = "5.12.3"):
    """SynthBrain.py's widget set up on the test scene with ``store``'s models, as Slicer does it: made
    with a parent, then ``setup()`` (torch on one thread, as the panel's worker would share two
    cores). Yields widget, ui, module, gui, scene, parameters."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    gui = install(monkeypatch, lambda: mrml_app.scene, release=release)
    module = import_module_file(monkeypatch)
    if module.UNSUPPORTED is not None:
        raise AssertionError(f"the module refused this Python/Slicer: {module.UNSUPPORTED}")
    widget = module.SynthBrainWidget(module_panel_parent())
    widget.logic = module.SynthBrainLogic(scene=mrml_app.scene, store=store, sequencesLogic=mrml_app.sequences)
    widget.setup()
    try:
        yield types.SimpleNamespace(
            widget=widget, ui=widget.ui, module=module, gui=gui, scene=mrml_app.scene, parameters=widget._parameterNode
        )
    finally:
        widget.cleanup()
        torch.set_num_threads(threads)
