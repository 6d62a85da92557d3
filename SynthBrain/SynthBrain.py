"""SynthBrain: synthesise brain MRI with published generative models, inside 3D Slicer.

This file holds what needs the Slicer application: the module, its panel (widget), the parameter
node and the self-test. Everything that touches MRML without Qt is in ``SynthBrainSlicer/`` and is
tested with pytest outside Slicer (see Testing/test_slicer_*.py in the repository).
"""

import enum
import logging
import random
from typing import Annotated, Optional, Union

import ctk
import qt
import vtk

import slicer
from slicer.parameterNodeWrapper import GuiConnector, WithinRange, parameterNodeGuiConnector, parameterNodeWrapper, unannotatedType
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

from SynthBrainSlicer import environment

environment.ensure_library_on_path()

from SynthBrainSlicer import logic as core  # noqa: E402  (needs the path set above for its lazy imports)
from SynthBrainSlicer.tasks import BackgroundRun  # noqa: E402

MAX_SEED = 2**31 - 1  # QSpinBox holds a C int


#
# Module
#
class SynthBrain(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "SynthBrain"
        self.parent.categories = ["Simulation"]
        self.parent.dependencies = ["Segmentations", "SubjectHierarchy", "Sequences"]
        self.parent.contributors = ["SynthBrain developers"]
        self.parent.helpText = (
            "Synthesise brain MRI with published generative models: a T1 brain from age, sex and volumes "
            "(Brain LDM), ageing sweeps, and FLAIR/T1/T2 images from label maps with painted lesions "
            "(brainSPADE3D). Results are synthetic and for research only. "
            '<a href="https://github.com/SynthBrain/SlicerSynthBrain#readme">Documentation</a>.'
        )
        self.parent.acknowledgementText = (
            "Models: Pinaya et al., Brain imaging generation with latent diffusion models (DGM4MICCAI 2022); "
            "Fernandez et al., A 3D generative model of pathological multi-modal MR images and segmentations "
            "(DGM4MICCAI 2023). Built on MONAI."
        )


#
# Parameters
#
class Device(enum.Enum):
    AUTO = "auto"
    CPU = "cpu"
    GPU = "cuda"

    def label(self):
        return {"auto": "Auto (GPU if present)", "cpu": "CPU", "cuda": "GPU (CUDA)"}[self.value]


class Sex(enum.Enum):
    FEMALE = "female"
    MALE = "male"

    def label(self):
        return self.value.capitalize()


class MRSequence(enum.Enum):
    T1 = "T1"
    FLAIR = "FLAIR"
    T2 = "T2"

    def label(self):
        return self.value


class Sampler(enum.Enum):
    DEFAULT = "default"
    DDIM = "ddim"
    DDPM = "ddpm"
    PNDM = "pndm"
    RFLOW = "rflow"
    DPMPP2M = "dpm++2m"

    def label(self):
        if self is Sampler.DEFAULT:
            return "Model default"
        return "DPM-Solver++(2M)" if self is Sampler.DPMPP2M else self.value.upper()

    @property
    def samplerName(self):
        """What SynthBrainLib takes: None for the card's default sampler."""
        return None if self is Sampler.DEFAULT else self.value


# Widest values a parameter may ever hold (validation of saved scenes). The sliders themselves
# take each model card's range, unit and default when the model is chosen.
AGE_BOUNDS = (0.0, 150.0)
VOLUME_BOUNDS = (0.0, 10000.0)
FRACTION_BOUNDS = (0.0, 1.0)


@parameterNodeWrapper
class SynthBrainParameterNode:
    device: Device = Device.AUTO
    # Conditioned brain (slider ranges and defaults come from the chosen model card)
    brainModel: str = ""
    age: Annotated[float, WithinRange(*AGE_BOUNDS)] = 65.0
    sex: Sex = Sex.FEMALE
    ventricularVolume: Annotated[float, WithinRange(*VOLUME_BOUNDS)] = 20.0
    brainVolume: Annotated[float, WithinRange(*VOLUME_BOUNDS)] = 1300.0
    seed: Annotated[int, WithinRange(0, MAX_SEED)] = 1
    sampler: Sampler = Sampler.DEFAULT
    steps: Annotated[int, WithinRange(1, 10000)] = 50
    preview: bool = False
    # Age sweep
    sweepAgeFrom: Annotated[float, WithinRange(*AGE_BOUNDS)] = 50.0
    sweepAgeTo: Annotated[float, WithinRange(*AGE_BOUNDS)] = 80.0
    sweepSteps: Annotated[int, WithinRange(2, 200)] = 7
    sweepTypicalVolumes: bool = True
    # Lesion painting
    labelModel: str = ""
    wmh: Annotated[float, WithinRange(*FRACTION_BOUNDS)] = 0.0
    tumour: Annotated[float, WithinRange(*FRACTION_BOUNDS)] = 0.0
    edema: Annotated[float, WithinRange(*FRACTION_BOUNDS)] = 0.0
    gdtumour: Annotated[float, WithinRange(*FRACTION_BOUNDS)] = 0.0
    lesionSeed: Annotated[int, WithinRange(0, MAX_SEED)] = 1
    templateInput: Optional[Union[slicer.vtkMRMLSegmentationNode, slicer.vtkMRMLLabelMapVolumeNode]]
    paintSegmentation: Optional[slicer.vtkMRMLSegmentationNode]
    paintReference: Optional[slicer.vtkMRMLScalarVolumeNode]
    imageModel: str = ""
    sequence: MRSequence = MRSequence.T1


#: parameter field -> (card condition, slider, label) for the conditioned-brain model.
BRAIN_CONDITIONS = {
    "age": ("age", "ageSlider", "ageLabel"),
    "ventricularVolume": ("ventricular_volume", "ventricularVolumeSlider", "ventricularVolumeLabel"),
    "brainVolume": ("brain_volume", "brainVolumeSlider", "brainVolumeLabel"),
}
#: parameter field -> (card condition, slider, label) for the label generator.
LESION_CONDITIONS = {
    "wmh": ("wmh", "wmhSlider", "wmhLabel"),
    "tumour": ("tumour", "tumourSlider", "tumourLabel"),
    "edema": ("edema", "edemaSlider", "edemaLabel"),
    "gdtumour": ("gdtumour", "gdtumourSlider", "gdtumourLabel"),
}
FIELD_BOUNDS = {"age": AGE_BOUNDS, "ventricularVolume": VOLUME_BOUNDS, "brainVolume": VOLUME_BOUNDS,
                "wmh": FRACTION_BOUNDS, "tumour": FRACTION_BOUNDS, "edema": FRACTION_BOUNDS, "gdtumour": FRACTION_BOUNDS}


@parameterNodeGuiConnector
class ModelComboBoxToStrConnector(GuiConnector):
    """ctkComboBox <-> model id (str).

    The choices (installed model cards of one kind) change at run time, so the built-in QComboBox
    connector, which needs a fixed ``Choice`` list, does not fit. The model selectors are
    ctkComboBox so that only this connector matches them. Each item's data is the model id.
    """

    @staticmethod
    def canRepresent(widget, datatype) -> bool:
        widgetType = widget if isinstance(widget, type) else type(widget)
        return widgetType == ctk.ctkComboBox and unannotatedType(datatype) == str

    @staticmethod
    def create(widget, datatype):
        if ModelComboBoxToStrConnector.canRepresent(widget, datatype):
            return ModelComboBoxToStrConnector(widget)
        return None

    def __init__(self, widget):
        super().__init__()
        self._widget = widget

    def _connect(self):
        self._widget.currentIndexChanged.connect(self.changed)

    def _disconnect(self):
        self._widget.currentIndexChanged.disconnect(self.changed)

    def widget(self):
        return self._widget

    def read(self) -> str:
        index = self._widget.currentIndex
        return str(self._widget.itemData(index) or "") if index >= 0 else ""

    def write(self, value: str) -> None:
        index = self._widget.findData(value) if value else -1
        if value and index < 0:
            # A model saved in the scene that is not installed here: keep showing it.
            self._widget.addItem(f"{value} (not installed)", value)
            index = self._widget.count - 1
        self._widget.currentIndex = index


#
# Widget
#
class SynthBrainWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The SynthBrain panel. Runs happen in a worker thread (see SynthBrainSlicer.tasks)."""

    RUN_BUTTONS = ("generateButton", "sweepButton", "generateLabelsButton", "synthesizeButton")

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._run = None
        self._runButton = None
        self._runButtonText = ""
        self._onRunDone = None
        self._updatingCards = False
        self._timer = None

    # ---- setup and lifecycle -----------------------------------------------------------------
    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SynthBrain.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SynthBrainLogic()
        self._timer = qt.QTimer()
        self._timer.setInterval(100)
        self._timer.timeout.connect(self._pollRun)
        self._setupImportMenu()
        self._setupSegmentEditor()
        self._connectSignals()
        self.ui.progressBar.hide()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()

    def _connectSignals(self) -> None:
        ui = self.ui
        ui.generateButton.clicked.connect(lambda: self._start(ui.generateButton, self._brainTask, self._showVolume))
        ui.sweepButton.clicked.connect(lambda: self._start(ui.sweepButton, self._sweepTask, self._showSweep))
        ui.generateLabelsButton.clicked.connect(lambda: self._start(ui.generateLabelsButton, self._labelsTask, self._showTemplate))
        ui.synthesizeButton.clicked.connect(lambda: self._start(ui.synthesizeButton, self._synthesisTask, self._showSynthesis))
        ui.randomizeSeedButton.clicked.connect(lambda: self._randomize("seed"))
        ui.randomizeLesionSeedButton.clicked.connect(lambda: self._randomize("lesionSeed"))
        ui.useTemplateButton.clicked.connect(self.onUseTemplate)
        ui.refreshModelsButton.clicked.connect(lambda: self._refreshModels(force=True))
        ui.modelSelector.currentIndexChanged.connect(self._updateModelStatus)
        # "activated" fires on user choice only, not when a saved scene restores the selection:
        # only a user's choice resets the sliders to the new card's defaults.
        ui.brainModelSelector.activated.connect(lambda index: self._applyBrainCard(setDefaults=True))
        ui.labelModelSelector.activated.connect(lambda index: self._applyLabelCard(setDefaults=True))
        ui.imageModelSelector.activated.connect(lambda index: self._applyImageCard())

    def _setupImportMenu(self) -> None:
        menu = qt.QMenu(self.ui.importButton)
        menu.addAction("Model folder or MONAI bundle...").triggered.connect(self.onImportFolder)
        menu.addAction("Checkpoint file...").triggered.connect(self.onImportCheckpoint)
        self.ui.importButton.setMenu(menu)

    def _setupSegmentEditor(self) -> None:
        editor = self.ui.segmentEditorWidget
        editor.setMRMLScene(slicer.mrmlScene)
        editor.setMRMLSegmentEditorNode(self._segmentEditorNode())
        # The template and the volume to paint on are chosen with this panel's own selectors.
        _call(editor, ("setSegmentationNodeSelectorVisible",), False)
        _call(editor, ("setSourceVolumeNodeSelectorVisible", "setMasterVolumeNodeSelectorVisible"), False)

    @staticmethod
    def _segmentEditorNode():
        node = slicer.mrmlScene.GetSingletonNode("SynthBrain", "vtkMRMLSegmentEditorNode")
        if node is None:
            node = slicer.vtkMRMLSegmentEditorNode()
            node.SetSingletonTag("SynthBrain")
            node = slicer.mrmlScene.AddNode(node)
        return node

    def cleanup(self) -> None:
        self._cancelRun()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()
        _call(self.ui.segmentEditorWidget, ("installKeyboardShortcuts",))

    def exit(self) -> None:
        _call(self.ui.segmentEditorWidget, ("setActiveEffect",), None)
        _call(self.ui.segmentEditorWidget, ("uninstallKeyboardShortcuts",))
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        self._cancelRun()  # its result would belong to the closed scene: discard it
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        self.ui.segmentEditorWidget.setMRMLSegmentEditorNode(self._segmentEditorNode())
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        self._refreshModels()

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        if self._parameterNode is None or self._updatingCards:
            return
        self._syncSegmentEditor()
        self._updateButtons()

    # ---- models ------------------------------------------------------------------------------
    def _dependenciesReady(self) -> bool:
        missing = self.logic.missingDependencies()
        if missing:
            self.ui.modelStatusLabel.text = f"Python packages to install on first use: {', '.join(missing)}."
            self.ui.deviceInfoLabel.text = ""
        return not missing

    def _refreshModels(self, force: bool = False) -> None:
        if self._parameterNode is None or not self._dependenciesReady():
            return
        if force:
            self.logic.refreshModels()
        try:
            statuses = self.logic.listModels()
            self.ui.deviceInfoLabel.text = self.logic.deviceInfo()["text"]
        except Exception as exc:  # a broken card or model folder must not break the panel
            self._showError(exc)
            return
        shown = self.ui.modelSelector.itemData(self.ui.modelSelector.currentIndex) if self.ui.modelSelector.currentIndex >= 0 else None
        _fillCombo(self.ui.modelSelector, [(f"{s.id} ({core.KIND_NAMES.get(s.kind, s.kind)})", s.id) for s in statuses],
                   shown or (statuses[0].id if statuses else None))
        for field, selector, kind in (("brainModel", "brainModelSelector", core.BRAIN_KIND), ("labelModel", "labelModelSelector", core.LABELS_KIND),
                                      ("imageModel", "imageModelSelector", core.IMAGE_KIND)):
            items = [(s.id if s.installed else f"{s.id} (not installed)", s.id) for s in statuses if s.kind == kind]
            _fillCombo(getattr(self.ui, selector), items, getattr(self._parameterNode, field))
            if not getattr(self._parameterNode, field):
                # A new scene: start with an installed model and its card's defaults.
                setattr(self._parameterNode, field, self.logic.defaultModel(kind) or "")
                self._applyCards(setDefaults=True, kinds=(kind,))
        self._applyCards(setDefaults=False)
        self._updateModelStatus()

    def _updateModelStatus(self, index=None) -> None:
        modelId = self.ui.modelSelector.itemData(self.ui.modelSelector.currentIndex)
        if not modelId:
            self.ui.modelStatusLabel.text = "No model card found."
            return
        status = self.logic.modelStatus(str(modelId))
        card = self.logic.card(status.id)
        self.ui.modelStatusLabel.text = f"{card.name}: {status.summary}"
        self.ui.modelStatusLabel.toolTip = f"{card.description}\n\nLicence: {card.licence}\n\nCitation: {card.citation}"

    def _card(self, field):
        modelId = getattr(self._parameterNode, field)
        try:
            return self.logic.card(modelId) if modelId else None
        except Exception as exc:
            if not isUserError(exc):
                raise
            return None  # unknown id from a saved scene: its selector says "(not installed)"

    def _applyCards(self, setDefaults: bool, kinds=(core.BRAIN_KIND, core.LABELS_KIND, core.IMAGE_KIND)) -> None:
        if core.BRAIN_KIND in kinds:
            self._applyBrainCard(setDefaults)
        if core.LABELS_KIND in kinds:
            self._applyLabelCard(setDefaults)
        if core.IMAGE_KIND in kinds:
            self._applyImageCard()

    def _applyBrainCard(self, setDefaults: bool) -> None:
        card = self._card("brainModel")
        if card is None:
            return
        with _Guard(self):
            self._applyConditions(card, BRAIN_CONDITIONS, setDefaults)
            if "sex" in card.conditioning.names:
                variable = card.conditioning.variable("sex")
                self.ui.sexSelector.toolTip = variable.note
                if setDefaults and variable.default in [s.value for s in Sex]:
                    self._parameterNode.sex = Sex(variable.default)
            self.ui.sexSelector.enabled = "sex" in card.conditioning.names
            self._applyAgeSweep(card, setDefaults)
            if card.sampling is not None:
                self.ui.stepsSpinBox.maximum = card.sampling.max_steps
                if setDefaults:
                    self._parameterNode.sampler = Sampler.DEFAULT
                    self._parameterNode.steps = card.sampling.default_steps

    def _applyAgeSweep(self, card, setDefaults: bool) -> None:
        hasAge = core.AGE in card.conditioning.names
        self.ui.sweepCollapsibleButton.enabled = hasAge
        if not hasAge:
            return
        settings = core.sliderSettings(card.conditioning.variable(core.AGE))
        for field, slider, end in (("sweepAgeFrom", self.ui.sweepAgeFromSlider, "minimum"), ("sweepAgeTo", self.ui.sweepAgeToSlider, "maximum")):
            _configureSlider(slider, settings, AGE_BOUNDS, self.ui.ageSlider.suffix)
            if setDefaults:
                setattr(self._parameterNode, field, settings[end])

    def _applyLabelCard(self, setDefaults: bool) -> None:
        card = self._card("labelModel")
        if card is not None:
            with _Guard(self):
                self._applyConditions(card, LESION_CONDITIONS, setDefaults)

    def _applyImageCard(self) -> None:
        card = self._card("imageModel")
        names = card.sequences.names if card is not None and card.sequences is not None else ()
        self.ui.sequenceSelector.toolTip = f"Sequences of this model: {', '.join(names)}" if names else "MR sequence of the synthesised image."

    def _applyConditions(self, card, fields, setDefaults: bool) -> None:
        """Sliders take the card's range, unit, note and (on a new choice) default."""
        for field, (name, sliderName, labelName) in fields.items():
            slider, label = getattr(self.ui, sliderName), getattr(self.ui, labelName)
            present = name in card.conditioning.names and card.conditioning.variable(name).kind == "continuous"
            slider.enabled = label.enabled = present
            if not present:
                slider.toolTip = f"Model {card.id} has no '{name}' condition."
                continue
            variable = card.conditioning.variable(name)
            settings = core.sliderSettings(variable)
            unit = variable.unit if variable.unit and variable.unit != "fraction" else ""
            _configureSlider(slider, settings, FIELD_BOUNDS[field], f" {unit}" if unit else "")
            label.text = f"{variable.label}{f' ({unit})' if unit else ''}:"
            slider.toolTip = variable.note or variable.label
            if setDefaults:
                setattr(self._parameterNode, field, min(max(settings["default"], slider.minimum), slider.maximum))

    # ---- importing models ----------------------------------------------------------------------
    def onImportFolder(self) -> None:
        path = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), "Import a model folder or a MONAI bundle")
        if path:
            self._import(path)

    def onImportCheckpoint(self) -> None:
        path = qt.QFileDialog.getOpenFileName(slicer.util.mainWindow(), "Import a checkpoint", "", "Checkpoints (*.pt *.pth *.ckpt *.safetensors)")
        if not path or not self._dependencies():
            return
        cards = self.logic.cards()
        modelId = _choose("Which model are these weights for?", sorted(cards))
        if modelId is None:
            return
        keys = sorted(cards[modelId].weights)
        component = keys[0] if len(keys) == 1 else _choose(f"Which weights of {modelId} is {path}?", keys)
        if component is not None:
            self._import(path, model=modelId, component=component)

    def _import(self, path, model=None, component=None) -> None:
        if not self._dependencies():
            return
        try:
            with _WaitCursor():
                installed = self.logic.importModel(path, model=model, component=component)
        except Exception as exc:  # reported to the user in one sentence (unexpected ones also logged)
            self._showError(exc)
            return
        self._refreshModels(force=True)
        self.ui.statusLabel.text = f"Imported {installed.card.id} into {installed.folder}."

    # ---- runs ------------------------------------------------------------------------------------
    def _dependencies(self) -> bool:
        """True when the Python packages are there; on first use, ask and install them."""
        missing = self.logic.missingDependencies()
        if not missing:
            return True
        question = (f"SynthBrain needs Python packages that are not installed yet: {', '.join(missing)}.\n\n"
                    "Install them now? PyTorch comes through the PyTorch extension and can take several minutes to download.")
        if not slicer.util.confirmOkCancelDisplay(question, windowTitle="SynthBrain"):
            return False
        try:
            with _WaitCursor():
                self.logic.installDependencies()
        except Exception as exc:  # reported to the user in one sentence (unexpected ones also logged)
            self._showError(exc)
            return False
        self._refreshModels(force=True)
        return True

    def _start(self, button, makeTask, onDone) -> None:
        if self._run is not None:
            if button is self._runButton:
                self._run.cancel()  # the button reads "Cancel" while its run is going
                self.ui.statusLabel.text = "Cancelling..."
            return
        if not self._dependencies():
            return
        try:
            self.logic.device = self._parameterNode.device.value
            task = makeTask()  # validates inputs and reads the scene, on the main thread
        except Exception as exc:  # reported to the user in one sentence (unexpected ones also logged)
            self._showError(exc)
            return
        self._run = BackgroundRun(task).start()
        self._runButton, self._runButtonText, self._onRunDone = button, button.text, onDone
        button.text = "Cancel"
        self.ui.progressBar.value = 0
        self.ui.progressBar.show()
        self.ui.statusLabel.text = f"Running {task.title}..."
        self._updateButtons()
        self._timer.start()

    def _pollRun(self) -> None:
        run = self._run
        if run is None:
            self._timer.stop()
            return
        self.ui.progressBar.value = int(round(100 * run.fraction))
        if not run.done:
            return
        self._timer.stop()
        onDone = self._onRunDone
        self._endRun()
        try:
            result = run.finish()  # main thread: creates the result nodes
        except Exception as exc:  # the run's error (raised in the worker), or its cancellation
            if type(exc).__name__ == "SynthesisCancelled":
                self.ui.statusLabel.text = "Cancelled: nothing was added to the scene."
            else:
                self._showError(exc)
            return
        self.ui.statusLabel.text = f"Added {result.GetName()}."
        onDone(result)

    def _endRun(self) -> None:
        if self._runButton is not None:
            self._runButton.text = self._runButtonText
        self._run, self._runButton, self._onRunDone = None, None, None
        self.ui.progressBar.hide()
        self._updateButtons()

    def _cancelRun(self) -> None:
        if self._run is not None:
            self._run.cancel()
            if self._timer is not None:
                self._timer.stop()
            self._endRun()

    def _updateButtons(self) -> None:
        running = self._run is not None
        for name in self.RUN_BUTTONS:
            button = getattr(self.ui, name)
            button.enabled = (button is self._runButton) if running else True
        self.ui.importButton.enabled = self.ui.refreshModelsButton.enabled = self.ui.useTemplateButton.enabled = not running

    def _brainTask(self):
        p = self._parameterNode
        if p.preview:  # the pipeline's preview sampler and steps, not the Advanced ones
            return self.logic.brainTask(model=p.brainModel or None, seed=p.seed, preview=True, **self._brainConditions())
        return self.logic.brainTask(model=p.brainModel or None, seed=p.seed, sampler=p.sampler.samplerName, steps=p.steps, **self._brainConditions())

    def _sweepTask(self):
        p = self._parameterNode
        conditions = {k: v for k, v in self._brainConditions().items() if k != core.AGE}
        card = self._card("brainModel")
        if p.sweepTypicalVolumes and card is not None:
            # Conditions with an age-typical default are left unset so that they follow the age.
            conditions = {k: v for k, v in conditions.items() if not (k in card.conditioning.names and card.conditioning.variable(k).default_from)}
        return self.logic.ageSweepTask(p.sweepAgeFrom, p.sweepAgeTo, p.sweepSteps, model=p.brainModel or None, seed=p.seed,
                                       sampler=p.sampler.samplerName, steps=p.steps, **conditions)

    def _labelsTask(self):
        p = self._parameterNode
        card = self._card("labelModel")
        conditions = {name: getattr(p, field) for field, (name, _, _) in LESION_CONDITIONS.items() if card is not None and name in card.conditioning.names}
        return self.logic.labelsTask(model=p.labelModel or None, seed=p.lesionSeed, **conditions)

    def _synthesisTask(self):
        p = self._parameterNode
        return self.logic.synthesisTask(p.paintSegmentation, sequence=p.sequence.value, model=p.imageModel or None,
                                        referenceVolumeNode=p.paintReference, seed=p.lesionSeed)

    def _brainConditions(self) -> dict:
        p = self._parameterNode
        card = self._card("brainModel")
        names = card.conditioning.names if card is not None else ()
        conditions = {name: getattr(p, field) for field, (name, _, _) in BRAIN_CONDITIONS.items() if name in names}
        if "sex" in names:
            conditions["sex"] = p.sex.value
        return conditions

    def _randomize(self, field) -> None:
        setattr(self._parameterNode, field, random.randint(0, MAX_SEED))

    # ---- showing results ---------------------------------------------------------------------------
    def _showVolume(self, volumeNode) -> None:
        slicer.util.setSliceViewerLayers(background=volumeNode, fit=True)

    def _showSweep(self, sequenceNode) -> None:
        browser = slicer.mrmlScene.GetNodeByID(sequenceNode.GetAttribute(core.mrml.BROWSER_ATTRIBUTE) or "")
        if browser is None:
            return
        slicer.modules.sequences.logic().UpdateProxyNodesFromSequences(browser)
        proxy = browser.GetProxyNode(sequenceNode)
        if proxy is not None:
            slicer.util.setSliceViewerLayers(background=proxy, fit=True)
        _call(slicer.modules.sequences, ("showSequenceBrowser",), browser)

    def _showTemplate(self, segmentationNode) -> None:
        p = self._parameterNode
        if p.paintReference is None:
            p.paintReference = self.logic.paintVolume(segmentationNode, model=p.imageModel or None)
            slicer.util.setSliceViewerLayers(background=p.paintReference, fit=True)
        p.paintSegmentation = segmentationNode

    def _showSynthesis(self, volumeNode) -> None:
        slicer.util.setSliceViewerLayers(background=volumeNode, fit=True)

    def onUseTemplate(self) -> None:
        p = self._parameterNode
        if p.templateInput is None:
            slicer.util.errorDisplay("Select a segmentation or a label map to use as the template.", windowTitle="SynthBrain")
            return
        if not self._dependencies():
            return
        try:
            segmentation = self.logic.templateFromNode(p.templateInput, model=p.imageModel or None)
        except Exception as exc:  # reported to the user in one sentence (unexpected ones also logged)
            self._showError(exc)
            return
        self.ui.statusLabel.text = f"Added {segmentation.GetName()}."
        p.paintSegmentation = segmentation
        if p.paintReference is None:  # the Segment Editor paints on a volume
            p.paintReference = self.logic.paintVolume(segmentation, model=p.imageModel or None)

    def _syncSegmentEditor(self) -> None:
        editor = self.ui.segmentEditorWidget
        p = self._parameterNode
        if editor.segmentationNode() is not p.paintSegmentation:
            editor.setSegmentationNode(p.paintSegmentation)
        setSource = getattr(editor, "setSourceVolumeNode", None) or editor.setMasterVolumeNode
        getSource = getattr(editor, "sourceVolumeNode", None) or editor.masterVolumeNode
        if getSource() is not p.paintReference:
            setSource(p.paintReference)

    # ---- errors ---------------------------------------------------------------------------------------
    def _showError(self, exc) -> None:
        slicer.util.errorDisplay(errorMessage(exc), windowTitle="SynthBrain")


def isUserError(exc) -> bool:
    """SynthBrainLib's errors (one-line messages) and failed installs, matched by class name so
    that this module can load before SynthBrainLib's dependencies are installed."""
    return any(cls.__name__ in ("SynthBrainError", "DependencyError") for cls in type(exc).__mro__)


def errorMessage(exc) -> str:
    """One clear sentence for the user; unexpected errors go to the log with their traceback."""
    name = type(exc).__name__
    if isUserError(exc):
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else name
    elif name == "OutOfMemoryError":
        text = "the GPU ran out of memory; choose CPU as the device, or close other programs that use the GPU"
    else:
        logging.error("SynthBrain failed", exc_info=exc)
        text = f"SynthBrain failed unexpectedly ({name}: {str(exc).strip().splitlines()[0] if str(exc).strip() else 'no message'}); details are in the Python console"
    text = text[0].upper() + text[1:]
    return text if text.endswith(".") else text + "."


def _configureSlider(slider, settings, bounds, suffix: str) -> None:
    slider.decimals = settings["decimals"]
    slider.singleStep = settings["singleStep"]
    slider.minimum = max(settings["minimum"], bounds[0])
    slider.maximum = min(settings["maximum"], bounds[1])
    slider.suffix = suffix


def _fillCombo(combo, items, current) -> None:
    """Replace a combo box's (text, data) items without emitting signals and select ``current``.

    An unknown ``current`` (a model saved in the scene, not installed here) stays listed; an empty
    one selects nothing.
    """
    wasBlocked = combo.blockSignals(True)
    try:
        combo.clear()
        for text, data in items:
            combo.addItem(text, data)
        index = combo.findData(current) if current else -1
        if current and index < 0:
            combo.addItem(f"{current} (not installed)", current)
            index = combo.count - 1
        combo.currentIndex = index
    finally:
        combo.blockSignals(wasBlocked)


def _choose(question, options):
    """The option the user picks, or None if they cancel.

    A QInputDialog object rather than QInputDialog.getItem: from Python, getItem cannot tell a
    cancelled dialog from one accepted on its first item.
    """
    if not options:
        return None
    dialog = qt.QInputDialog(slicer.util.mainWindow())
    dialog.setWindowTitle("SynthBrain")
    dialog.setLabelText(question)
    dialog.setComboBoxItems(options)
    dialog.setComboBoxEditable(False)
    accepted = (getattr(dialog, "exec_", None) or dialog.exec)()
    return dialog.textValue() if accepted else None


def _call(obj, names, *args):
    """Call the first method of ``names`` that this Slicer version has (APIs renamed over versions)."""
    for name in names:
        method = getattr(obj, name, None)
        if method is not None:
            return method(*args)
    return None


class _Guard:
    """Marks the widget as updating sliders from a card, so parameter-node echoes are ignored."""

    def __init__(self, widget):
        self.widget = widget

    def __enter__(self):
        self.widget._updatingCards = True

    def __exit__(self, *exc):
        self.widget._updatingCards = False
        return False


class _WaitCursor:
    def __enter__(self):
        slicer.app.setOverrideCursor(qt.Qt.WaitCursor)

    def __exit__(self, *exc):
        slicer.app.restoreOverrideCursor()
        return False


#
# Logic
#
class SynthBrainLogic(ScriptedLoadableModuleLogic, core.SynthBrainLogic):
    """Console-scriptable SynthBrain logic (works without the panel).

    Example, in Slicer's Python console::

        import SynthBrain
        logic = SynthBrain.SynthBrainLogic()
        brain = logic.generateBrain(age=72, sex="female", seed=3)
        labels = logic.generateLabels(wmh=0.03, seed=4)
        flair = logic.synthesizeFromSegmentation(labels, sequence="FLAIR")
        sweep = logic.ageSweep(50, 80, 7, seed=3)

    See SynthBrainSlicer.logic.SynthBrainLogic for every method and argument.
    """

    def __init__(self, scene=None, store=None, pipelineLoader=None, sequencesLogic=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        core.SynthBrainLogic.__init__(self, scene=scene, store=store, pipelineLoader=pipelineLoader, sequencesLogic=sequencesLogic)

    def getParameterNode(self):
        return SynthBrainParameterNode(super().getParameterNode())


#
# Test
#
class SynthBrainTest(ScriptedLoadableModuleTest):
    """Runs the demo models shipped in Resources/Models end to end inside Slicer.

    Run it with Slicer's test runner (ctest, after building the extension with BUILD_TESTING) or
    from the module panel's "Reload and Test" button (developer mode).
    """

    DEMO_BRAIN = "brain-ldm-demo"
    DEMO_LABELS = "labels-demo"
    DEMO_IMAGE = "label2image-demo"

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        for test in (self.test_Dependencies, self.test_DemoModels, self.test_GenerateBrain, self.test_AgeSweep,
                     self.test_LesionPaintingOnOtherGeometry, self.test_CancelLeavesSceneUnchanged, self.test_PanelRunAndCancel):
            self.setUp()
            test()

    def _logic(self):
        logic = SynthBrainLogic()
        logic.device = "cpu"  # the same numbers on every test machine
        return logic

    def _nodeIDs(self):
        return sorted(slicer.mrmlScene.GetNthNode(i).GetID() for i in range(slicer.mrmlScene.GetNumberOfNodes()))

    def test_Dependencies(self):
        self.delayDisplay("Python dependencies")
        logic = self._logic()
        if logic.missingDependencies():
            logic.installDependencies()
        self.assertEqual(logic.missingDependencies(), [])

    def test_DemoModels(self):
        self.delayDisplay("Demo models")
        logic = self._logic()
        for modelId, kind in ((self.DEMO_BRAIN, core.BRAIN_KIND), (self.DEMO_LABELS, core.LABELS_KIND), (self.DEMO_IMAGE, core.IMAGE_KIND)):
            status = logic.modelStatus(modelId)
            self.assertTrue(status.installed, status.summary)
            self.assertEqual(status.kind, kind)

    def test_GenerateBrain(self):
        self.delayDisplay("Conditioned brain")
        import numpy as np

        logic = self._logic()
        card = logic.card(self.DEMO_BRAIN)
        steps = []
        volume = logic.generateBrain(model=self.DEMO_BRAIN, age=72, sex="female", seed=3, progress=lambda s, t: steps.append((s, t)))
        self.assertEqual(volume.GetAttribute(core.mrml.SYNTHETIC_ATTRIBUTE), "true")
        self.assertEqual(core.mrml.provenance_of(volume)["seed"], 3)
        self.assertTrue(np.allclose(core.mrml.volume_affine(volume), card.output.affine))
        self.assertEqual(volume.GetImageData().GetDimensions(), tuple(card.output.shape))
        self.assertEqual(steps[-1][0], steps[-1][1])
        again = logic.generateBrain(model=self.DEMO_BRAIN, age=72, sex="female", seed=3)
        self.assertNotEqual(again.GetID(), volume.GetID())
        self.assertTrue(np.array_equal(slicer.util.arrayFromVolume(again), slicer.util.arrayFromVolume(volume)))

    def test_AgeSweep(self):
        self.delayDisplay("Age sweep")
        logic = self._logic()
        low, high = logic.card(self.DEMO_BRAIN).conditioning.variable("age").range
        sequence = logic.ageSweep(low, high, 3, model=self.DEMO_BRAIN, seed=5)
        self.assertEqual(sequence.GetNumberOfDataNodes(), 3)
        self.assertEqual(sequence.GetIndexName(), "age")
        browser = slicer.mrmlScene.GetNodeByID(sequence.GetAttribute(core.mrml.BROWSER_ATTRIBUTE))
        self.assertIsNotNone(browser)
        self.assertIsNotNone(browser.GetProxyNode(sequence))

    def test_LesionPaintingOnOtherGeometry(self):
        self.delayDisplay("Lesion painting and synthesis")
        import numpy as np

        logic = self._logic()
        template = logic.generateLabels(model=self.DEMO_LABELS, seed=4)
        # Paint on a grid unlike the model's: 1.5 mm, flipped left-right, offset.
        affine = np.array([[-1.5, 0, 0, 60.0], [0, 1.5, 0, -90.0], [0, 0, 1.5, -50.0], [0, 0, 0, 1]])
        reference = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "paint grid")
        core.mrml.fill_volume(reference, np.zeros((80, 100, 70), np.float32), affine)
        template.SetReferenceImageGeometryParameterFromVolumeNode(reference)
        lesion = np.zeros((70, 100, 80), np.uint8)  # [k, j, i]
        lesion[30:38, 55:63, 35:43] = 1
        tumourId = core.mrml.segment_id_for(template, "tumour")
        slicer.util.updateSegmentBinaryLabelmapFromArray(lesion, template, tumourId, reference)
        image = logic.synthesizeFromSegmentation(template, model=self.DEMO_IMAGE, sequence="FLAIR", seed=4)
        self.assertTrue(np.allclose(core.mrml.volume_affine(image), affine))
        self.assertEqual(image.GetImageData().GetDimensions(), (80, 100, 70))
        labels, labelsAffine = core.mrml.segmentation_to_labels(template, logic.card(self.DEMO_IMAGE).labels)
        tumourValue = [c.value for c in logic.card(self.DEMO_IMAGE).labels if c.name == "tumour"][0]
        self.assertTrue(np.all(labels.transpose(2, 1, 0)[lesion > 0] == tumourValue))
        self.assertEqual(core.mrml.provenance_of(image)["sequence"], "FLAIR")

    def test_CancelLeavesSceneUnchanged(self):
        self.delayDisplay("Cancel")
        import threading

        logic = self._logic()
        before = self._nodeIDs()
        cancel = threading.Event()

        def progress(step, total):
            cancel.set()

        with self.assertRaises(Exception) as raised:
            logic.generateBrain(model=self.DEMO_BRAIN, seed=1, progress=progress, cancel=cancel)
        self.assertEqual(type(raised.exception).__name__, "SynthesisCancelled")
        self.assertEqual(self._nodeIDs(), before)

    def test_PanelRunAndCancel(self):
        self.delayDisplay("Panel: generate, then cancel")
        if slicer.util.mainWindow() is None:
            logging.info("SynthBrainTest: no main window (--no-main-window), the panel test is skipped")
            return
        slicer.util.selectModule("SynthBrain")
        widget = slicer.util.getModuleWidget("SynthBrain")
        parameters = widget.logic.getParameterNode()
        parameters.brainModel = self.DEMO_BRAIN
        parameters.device = Device.CPU
        before = slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
        widget.ui.generateButton.click()
        self.assertEqual(widget.ui.generateButton.text, "Cancel")
        self._waitForRun(widget)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"), before + 1)
        before = self._nodeIDs()
        widget.ui.generateButton.click()
        widget.ui.generateButton.click()  # now "Cancel"
        self._waitForRun(widget)
        self.assertEqual(self._nodeIDs(), before)

    def _waitForRun(self, widget, timeout=600.0):
        import time

        end = time.time() + timeout
        while widget._run is not None and time.time() < end:
            slicer.app.processEvents()
            time.sleep(0.05)
        self.assertIsNone(widget._run, "the run did not finish in time")
