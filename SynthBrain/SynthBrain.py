"""SynthBrain: synthesise brain MRI with published generative models, inside 3D Slicer.

Only what needs the Slicer application is here (module, parameter node, panel, Logic). The panel's
rules, the MRML work and the installs are in the Qt-free ``SynthBrainSlicer/`` package, tested with
pytest on Slicer's MRML and Slicer's own parameterNodeWrapper; the self-test is in ``Testing/Python``.
"""

import importlib
import random
import sys
from pathlib import Path
from typing import Annotated, Optional, Union

import qt
import slicer
import vtk
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from SynthBrainSlicer import environment

environment.ensure_library_on_path()

from SynthBrainSlicer import logic as core  # noqa: E402  (after the path is set)
from SynthBrainSlicer import panel, views  # noqa: E402
from SynthBrainSlicer.choices import BRAIN_KIND, IMAGE_KIND, LABELS_KIND, Device, MRSequence, Precision, Sampler, Sex  # noqa: E402
from SynthBrainSlicer.dependencies import ensure_installed  # noqa: E402
from SynthBrainSlicer.runs import PanelRuns  # noqa: E402

MAX_SEED = 2**31 - 1  # QSpinBox holds a C int


class SynthBrain(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("SynthBrain")
        self.parent.categories = [_("Simulation")]
        self.parent.dependencies = ["Segmentations", "SubjectHierarchy", "Sequences"]
        self.parent.contributors = ["SynthBrain developers"]
        self.parent.helpText = _(
            "Synthesise brain MRI with published generative models: a T1 brain from age, sex and volumes "
            "(Brain LDM), ageing sweeps and comparisons, and FLAIR/T1/T2 images from label maps with painted "
            "lesions (brainSPADE3D). Results are synthetic and for research only."
        )
        self.parent.acknowledgementText = _(
            "Models: Pinaya et al., DGM4MICCAI 2022; Fernandez et al., DGM4MICCAI 2023. Built on MONAI."
        )


@parameterNodeWrapper
class SynthBrainParameterNode:
    device: Device = Device.AUTO
    # Model ids: synced by panel.ModelSelectors (Slicer >= 5.8 cannot bind a combo box to str without a fixed Choice).
    brainModel: str = ""
    labelModel: str = ""
    imageModel: str = ""
    # Conditioned brain (slider ranges and defaults come from the chosen model card)
    age: Annotated[float, WithinRange(*panel.AGE_BOUNDS)] = 65.0
    sex: Sex = Sex.FEMALE
    ventricularVolume: Annotated[float, WithinRange(*panel.VOLUME_BOUNDS)] = 20.0
    brainVolume: Annotated[float, WithinRange(*panel.VOLUME_BOUNDS)] = 1300.0
    rawValues: bool = False
    measureVolumes: bool = True
    seed: Annotated[int, WithinRange(0, MAX_SEED)] = 1
    sampler: Sampler = Sampler.DEFAULT
    steps: Annotated[int, WithinRange(1, 10000)] = 50
    preview: bool = False
    published: bool = False
    guidance: Annotated[float, WithinRange(0.0, 10.0)] = 0.0  # 0: the model's default scale
    precision: Precision = Precision.AUTO
    # Age sweep
    sweepAgeFrom: Annotated[float, WithinRange(*panel.AGE_BOUNDS)] = 50.0
    sweepAgeTo: Annotated[float, WithinRange(*panel.AGE_BOUNDS)] = 80.0
    sweepSteps: Annotated[int, WithinRange(2, 200)] = 7
    sweepTypicalVolumes: bool = True
    # Lesion painting
    wmh: Annotated[float, WithinRange(*panel.FRACTION_BOUNDS)] = 0.0
    tumour: Annotated[float, WithinRange(*panel.FRACTION_BOUNDS)] = 0.0
    edema: Annotated[float, WithinRange(*panel.FRACTION_BOUNDS)] = 0.0
    gdtumour: Annotated[float, WithinRange(*panel.FRACTION_BOUNDS)] = 0.0
    lesionSeed: Annotated[int, WithinRange(0, MAX_SEED)] = 1
    templateInput: Optional[Union[slicer.vtkMRMLSegmentationNode, slicer.vtkMRMLLabelMapVolumeNode]]
    paintSegmentation: Optional[slicer.vtkMRMLSegmentationNode]
    paintReference: Optional[slicer.vtkMRMLScalarVolumeNode]
    insertMargin: Annotated[float, WithinRange(0.0, 20.0)] = 3.0
    sequence: MRSequence = MRSequence.T1


class SynthBrainWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The SynthBrain panel. Runs happen in a worker thread (SynthBrainSlicer.tasks.BackgroundRun)."""

    MODEL_SELECTORS = {
        "brainModel": "brainModelSelector",
        "labelModel": "labelModelSelector",
        "imageModel": "imageModelSelector",
    }
    RUN_BUTTONS = (
        "generateButton",
        "sweepButton",
        "compareButton",
        "generateLabelsButton",
        "synthesizeButton",
        "insertButton",
        "downloadButton",
    )

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None  # set before setup() to inject one (tests)
        self._parameterNode = self._parameterNodeGuiTag = self._pinned = None
        self._updatingCards = self._downloadable = False

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SynthBrain.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = self.logic or SynthBrainLogic()
        self.selectors = panel.ModelSelectors(
            {field: getattr(self.ui, name) for field, name in self.MODEL_SELECTORS.items()}
        )
        self.runs = PanelRuns(
            {name: getattr(self.ui, name) for name in self.RUN_BUTTONS},
            self.ui.progressBar,
            self.ui.statusLabel,
            self._showError,
        )
        self._timer = qt.QTimer()
        self._timer.setInterval(100)
        self._timer.timeout.connect(self._pollRun)
        menu = qt.QMenu(self.ui.importButton)
        menu.addAction(_("Model folder or MONAI bundle...")).triggered.connect(self.onImportFolder)
        menu.addAction(_("Checkpoint file...")).triggered.connect(self.onImportCheckpoint)
        self.ui.importButton.setMenu(menu)
        self.ui.segmentEditorWidget.setMRMLScene(slicer.mrmlScene)
        self.ui.segmentEditorWidget.setMRMLSegmentEditorNode(views.segment_editor_node(slicer.mrmlScene))
        views.hide_editor_selectors(self.ui.segmentEditorWidget)  # this panel's own selectors choose them
        self._connectSignals()
        self.ui.progressBar.hide()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()

    def _connectSignals(self) -> None:
        ui = self.ui
        for button, task, done in (
            (ui.generateButton, self._brainTask, self._showBrain),
            (ui.sweepButton, self._sweepTask, self._showSweep),
            (ui.compareButton, self._compareTask, self._showComparison),
            (ui.generateLabelsButton, self._labelsTask, self._showTemplate),
            (ui.synthesizeButton, self._synthesisTask, self._showVolume),
            (ui.insertButton, self._insertionTask, self._showInsertion),
            (ui.downloadButton, self._downloadTask, lambda installed: self._refreshModels(force=True)),
        ):
            button.clicked.connect(lambda checked=False, b=button, t=task, d=done: self._start(b, t, d))
        ui.randomizeSeedButton.clicked.connect(
            lambda: setattr(self._parameterNode, "seed", random.randint(0, MAX_SEED))
        )
        ui.randomizeLesionSeedButton.clicked.connect(
            lambda: setattr(self._parameterNode, "lesionSeed", random.randint(0, MAX_SEED))
        )
        ui.pinButton.clicked.connect(self.onPin)
        ui.useTemplateButton.clicked.connect(self.onUseTemplate)
        ui.addLesionSegmentsButton.clicked.connect(self.onAddLesionSegments)
        ui.refreshModelsButton.clicked.connect(lambda: self._refreshModels(force=True))
        ui.modelSelector.currentIndexChanged.connect(self._updateModelStatus)
        ui.rawValuesCheckBox.toggled.connect(lambda checked: self._applyCard(BRAIN_KIND, setDefaults=True))
        # "activated" fires on a user's choice only (not when a saved scene restores the selection):
        # only then do the sliders take the new card's defaults.
        ui.brainModelSelector.activated.connect(lambda index: self._applyCard(BRAIN_KIND, setDefaults=True))
        ui.labelModelSelector.activated.connect(lambda index: self._applyCard(LABELS_KIND, setDefaults=True))

    def cleanup(self) -> None:
        self.runs.cancel()
        self.removeObservers()

    def onReload(self) -> None:
        """Reload the helper packages too, not only this file (developer mode's Reload)."""
        for name in [n for n in sys.modules if n.split(".")[0] in ("SynthBrainSlicer", "SynthBrainLib")]:
            del sys.modules[name]
        ScriptedLoadableModuleWidget.onReload(self)

    def enter(self) -> None:
        self.initializeParameterNode()
        self.ui.segmentEditorWidget.installKeyboardShortcuts()

    def exit(self) -> None:
        self.ui.segmentEditorWidget.setActiveEffect(None)
        self.ui.segmentEditorWidget.uninstallKeyboardShortcuts()
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self.runs.cancel()  # its result would belong to the closed scene: discard it
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        self.ui.segmentEditorWidget.setMRMLSegmentEditorNode(views.segment_editor_node(slicer.mrmlScene))
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        self._refreshModels()

    def setParameterNode(self, parameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.selectors.disconnect()
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.selectors.connect(self._parameterNode)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        if self._parameterNode is None or self._updatingCards:
            return
        self.selectors.update()
        views.sync_segment_editor(
            self.ui.segmentEditorWidget, self._parameterNode.paintSegmentation, self._parameterNode.paintReference
        )
        self._updateButtons()

    # ---- models ------------------------------------------------------------------------------
    def _refreshModels(self, force: bool = False) -> None:
        missing = self.logic.missingDependencies() if self._parameterNode is not None else []
        if self._parameterNode is None or missing:
            self.ui.modelStatusLabel.text = (
                _("Python packages to install on first use: {names}.").format(names=", ".join(missing))
                if missing
                else ""
            )
            return
        if force:
            self.logic.refreshModels()
        try:
            statuses = self.logic.listModels()
            self.ui.deviceInfoLabel.text = self.logic.deviceInfo()["text"]
        except Exception as exc:  # a broken card or model folder must not break the panel
            return self._showError(exc)
        for kind in panel.fill_model_selectors(
            self.ui.modelSelector, self.selectors, statuses, self._parameterNode, self.logic.defaultModel
        ):
            self._applyCard(kind, setDefaults=True)  # a new scene: an installed model and its card's defaults
        self._applyCard(BRAIN_KIND, setDefaults=False)
        self._applyCard(LABELS_KIND, setDefaults=False)
        self._updateModelStatus()

    def _updateModelStatus(self, index=None) -> None:
        modelId = panel.selected_data(self.ui.modelSelector)
        if not modelId:
            self.ui.modelStatusLabel.text = _("No model card found.")
            return
        status, card = self.logic.modelStatus(modelId), self.logic.card(modelId)
        self.ui.modelStatusLabel.text = f"{card.name}: {status.summary}"
        self.ui.modelStatusLabel.toolTip = (
            f"{card.description}\n\n{_('Licence')}: {card.licence}\n\n{_('Citation')}: {card.citation}"
        )
        self._downloadable = not status.installed and bool(card.weights_public)
        self._updateButtons()

    def _applyCard(self, kind: str, setDefaults: bool) -> None:
        card = self._card("brainModel" if kind == BRAIN_KIND else "labelModel")
        if card is None or kind == IMAGE_KIND:
            return
        self._updatingCards = True  # the parameter-node echoes of these changes are not user edits
        try:
            if kind == BRAIN_KIND:
                panel.apply_brain_card(self.ui, self._parameterNode, card, setDefaults)
            else:
                panel.apply_conditions(self.ui, self._parameterNode, card, panel.LESION_CONDITIONS, setDefaults)
        finally:
            self._updatingCards = False

    def _card(self, field):
        return self.logic.knownCard(getattr(self._parameterNode, field))

    # ---- importing models ----------------------------------------------------------------------
    def onImportFolder(self) -> None:
        path = qt.QFileDialog.getExistingDirectory(
            slicer.util.mainWindow(), _("Import a model folder or a MONAI bundle")
        )
        if path:
            self._import(path)

    def onImportCheckpoint(self) -> None:
        path = qt.QFileDialog.getOpenFileName(
            slicer.util.mainWindow(), _("Import a checkpoint"), "", "Checkpoints (*.pt *.pth *.ckpt *.safetensors)"
        )
        if path and self._dependencies():
            modelId = _choose(_("Which model are these weights for?"), sorted(self.logic.cards()))
            keys = sorted(self.logic.cards()[modelId].weights) if modelId else []
            component = (
                keys[0]
                if len(keys) == 1
                else _choose(_("Which weights of {model} is this file?").format(model=modelId), keys)
            )
            if component is not None:
                self._import(path, model=modelId, component=component)

    def _import(self, path, model=None, component=None) -> None:
        if not self._dependencies():
            return
        try:
            installed = self.logic.importModel(path, model=model, component=component)
        except Exception as exc:  # reported to the user in one sentence (unexpected ones also logged)
            return self._showError(exc)
        self._refreshModels(force=True)
        self.ui.statusLabel.text = _("Imported {model} into {folder}.").format(
            model=installed.card.id, folder=installed.folder
        )

    # ---- runs ------------------------------------------------------------------------------------
    def _dependencies(self) -> bool:
        """True when the Python packages are there; on first use, ask, install, and offer a restart."""
        if not self.logic.missingDependencies():
            return True
        ready = ensure_installed(
            self.logic.dependencies, slicer.util.confirmOkCancelDisplay, self._showError, slicer.util.restart
        )
        if ready:
            self._refreshModels(force=True)
        return ready

    def _start(self, button, makeTask, onDone) -> None:
        if not self.runs.running:
            if not self._dependencies():
                return
            self.logic.device, self.logic.precision, self.logic.preset = (
                self._parameterNode.device.value,
                self._parameterNode.precision.precisionName,
                "published" if self._parameterNode.published else "fast",
            )
            self.logic.guidance = self._parameterNode.guidance or None
        if self.runs.click(button, makeTask, onDone):
            self._updateButtons()
            self._timer.start()

    def _pollRun(self) -> None:
        if not self.runs.poll():
            self._timer.stop()
            self._updateButtons()

    def _updateButtons(self) -> None:
        self.runs.allowed = {"compareButton": self._pinned is not None, "downloadButton": self._downloadable}
        self.runs.updateButtons()
        for name in ("importButton", "refreshModelsButton", "useTemplateButton", "pinButton"):
            getattr(self.ui, name).enabled = not self.runs.running
        if self._parameterNode is not None:  # 'Model default' takes the preset's steps
            self.ui.stepsSpinBox.enabled = self._parameterNode.sampler is not Sampler.DEFAULT

    def _brainTask(self):
        return self.logic.brainTask(**panel.brain_request(self._parameterNode, self._card("brainModel")))

    def _sweepTask(self):
        request = panel.sweep_request(self._parameterNode, self._card("brainModel"))
        return self.logic.ageSweepTask(request.pop("ageFrom"), request.pop("ageTo"), request.pop("count"), **request)

    def onPin(self) -> None:
        self._pinned = panel.brain_conditions(self._parameterNode, self._card("brainModel"))
        self.ui.compareLabel.text = _("A: {conditions}").format(conditions=panel.describe_conditions(*self._pinned))
        self._updateButtons()

    def _compareTask(self):
        return self.logic.compareTask(
            **panel.compare_request(self._pinned, self._parameterNode, self._card("brainModel"))
        )

    def _labelsTask(self):
        return self.logic.labelsTask(**panel.labels_request(self._parameterNode, self._card("labelModel")))

    def _synthesisTask(self):
        p = self._parameterNode
        return self.logic.synthesisTask(
            p.paintSegmentation,
            sequence=p.sequence.value,
            model=p.imageModel or None,
            referenceVolumeNode=p.paintReference,
            seed=p.lesionSeed,
        )

    def _insertionTask(self):
        p = self._parameterNode
        return self.logic.insertionTask(
            p.paintReference,
            p.paintSegmentation,
            sequence=p.sequence.value,
            model=p.imageModel or None,
            margin=p.insertMargin,
            seed=p.lesionSeed,
        )

    def _downloadTask(self):
        return self.logic.downloadTask(panel.selected_data(self.ui.modelSelector))

    # ---- showing results ---------------------------------------------------------------------------
    def _showVolume(self, volumeNode) -> None:
        slicer.util.setSliceViewerLayers(background=volumeNode, fit=True)

    def _showBrain(self, volumeNode) -> None:
        self._showVolume(volumeNode)
        self.ui.measuredLabel.text = panel.measured_text(
            core.measuredVolumes(volumeNode), core.mrml.provenance_of(volumeNode)
        )

    def _showSweep(self, sequenceNode) -> None:
        proxy = views.sweep_proxy(slicer.mrmlScene, sequenceNode, slicer.modules.sequences.logic())
        if proxy is not None:
            self._showVolume(proxy)
        getattr(slicer.modules.sequences, "showSequenceBrowser", lambda browser: None)(
            views.sweep_browser(slicer.mrmlScene, sequenceNode)
        )

    def _showComparison(self, nodes) -> None:
        slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
        views.show_side_by_side(slicer.mrmlScene, *nodes)

    def _showInsertion(self, nodes) -> None:
        volume, lesions = nodes
        slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
        views.show_beside(slicer.mrmlScene, self._parameterNode.paintReference, volume, lesions)

    def onAddLesionSegments(self) -> None:
        p = self._parameterNode
        try:
            added = self.logic.addLesionSegments(p.paintSegmentation, model=p.imageModel or None)
        except Exception as exc:  # reported to the user in one sentence (unexpected ones also logged)
            return self._showError(exc)
        self.ui.statusLabel.text = _("Added segments: {names}.").format(names=", ".join(added) or _("none missing"))

    def _showTemplate(self, segmentationNode) -> None:
        p = self._parameterNode
        if p.paintReference is None:
            p.paintReference = self.logic.paintVolume(segmentationNode, model=p.imageModel or None)
            self._showVolume(p.paintReference)
        p.paintSegmentation = segmentationNode

    def onUseTemplate(self) -> None:
        p = self._parameterNode
        if not self._dependencies():
            return
        try:
            p.paintSegmentation, p.paintReference = self.logic.paintingFrom(
                p.templateInput, model=p.imageModel or None, reference=p.paintReference
            )
        except Exception as exc:  # reported to the user in one sentence (unexpected ones also logged)
            return self._showError(exc)
        self.ui.statusLabel.text = _("Added {name}.").format(name=p.paintSegmentation.GetName())

    def _showError(self, exc) -> None:
        slicer.util.errorDisplay(panel.error_message(exc), windowTitle="SynthBrain")


def _choose(question, options):
    """The option the user picks, or None if they cancel (QInputDialog.getItem cannot tell a
    cancelled dialog from one accepted on its first item)."""
    if not options:
        return None
    dialog = qt.QInputDialog(slicer.util.mainWindow())
    dialog.setWindowTitle("SynthBrain")
    dialog.setLabelText(question)
    dialog.setComboBoxItems(options)
    dialog.setComboBoxEditable(False)
    return dialog.textValue() if (getattr(dialog, "exec_", None) or dialog.exec)() else None


class SynthBrainLogic(ScriptedLoadableModuleLogic, core.SynthBrainLogic):
    """Console-scriptable logic (also ``slicer.util.getModuleLogic("SynthBrain")``), e.g.
    ``SynthBrain.SynthBrainLogic().generateBrain(age=72, sex="female", seed=3, background=True)``.
    Every method: SynthBrainSlicer.logic.SynthBrainLogic and docs/slicer.md."""

    def __init__(self, scene=None, store=None, pipelineLoader=None, sequencesLogic=None, dependencies=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        core.SynthBrainLogic.__init__(
            self,
            scene=scene,
            store=store,
            pipelineLoader=pipelineLoader,
            sequencesLogic=sequencesLogic,
            dependencies=dependencies,
        )
        self._timer = qt.QTimer()
        self._timer.setInterval(100)
        self._timer.timeout.connect(lambda: self.finishBackgroundRuns() or self._timer.stop())

    def getParameterNode(self):
        return SynthBrainParameterNode(super().getParameterNode())

    def startInBackground(self, task, progress=None):
        """As the core's; a main-thread timer then adds the nodes by themselves when the run ends."""
        run = core.SynthBrainLogic.startInBackground(self, task, progress)
        self._timer.start()
        return run


class SynthBrainTest(ScriptedLoadableModuleTest):
    """ "Reload and Test" runs Testing/Python/SynthBrainModuleTest.py of a source checkout."""

    def runTest(self):
        folder = Path(__file__).resolve().parent / "Testing" / "Python"
        if not (folder / "SynthBrainModuleTest.py").is_file():
            raise FileNotFoundError(
                f"the self-test is in a source checkout's SynthBrain/Testing/Python, not at {folder}"
            )
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
        test = importlib.reload(importlib.import_module("SynthBrainModuleTest"))
        test.SynthBrainModuleTest().runTest()
