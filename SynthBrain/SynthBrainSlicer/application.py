"""The parts of the module that need Slicer's application and Qt: the panel widget and the module's
logic (the console logic plus a main-thread timer). The only Qt module of this package: the panel's
rules are in :mod:`.panel`, the runs in :mod:`.runs`, the scene work in :mod:`.logic` and the task
builders, all tested without Qt.
"""

import random
import sys

import qt
import slicer
import vtk
from slicer.i18n import tr as _
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic, ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

from . import logic as core
from . import modality_panel, panel, views
from . import scene as mrml
from .brain_tasks import measured_volumes
from .choices import BRAIN_KIND, IMAGE_KIND, LABELS_KIND, MODALITY_KIND, Sampler
from .dependencies import ensure_installed
from .parameters import MAX_SEED, SynthBrainParameterNode
from .runs import PanelRuns


class SynthBrainLogic(core.SynthBrainLogic, ScriptedLoadableModuleLogic):
    """Console-scriptable logic (also ``slicer.util.getModuleLogic("SynthBrain")``), e.g.
    ``SynthBrain.SynthBrainLogic().generateBrain(age=72, sex="female", seed=3, background=True)``.
    Every method: SynthBrainSlicer.logic.SynthBrainLogic and docs/slicer.md."""

    def __init__(self, scene=None, store=None, pipelineLoader=None, sequencesLogic=None, dependencies=None) -> None:
        # core's __init__ ends in super().__init__(): Slicer's ScriptedLoadableModuleLogic.__init__
        # runs next in the method order, once.
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
        return SynthBrainParameterNode(ScriptedLoadableModuleLogic.getParameterNode(self))

    def startInBackground(self, task, progress=None):
        """As the core's; a main-thread timer then adds the nodes by themselves when the run ends."""
        run = core.SynthBrainLogic.startInBackground(self, task, progress)
        self._timer.start()
        return run


class SynthBrainWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The SynthBrain panel. Runs happen in a worker thread (SynthBrainSlicer.tasks.BackgroundRun)."""

    MODEL_SELECTORS = {
        "brainModel": "brainModelSelector",
        "labelModel": "labelModelSelector",
        "imageModel": "imageModelSelector",
        "modalityModel": "modalityModelSelector",
    }
    #: Pack members whose combo box a card fills at run time, synced by modality_panel.ChoiceSelector.
    CHOICE_SELECTORS = {"modality.modality": "modalitySelector"}
    RUN_BUTTONS = (
        "generateButton",
        "sweepButton",
        "compareButton",
        "generateLabelsButton",
        "synthesizeButton",
        "insertButton",
        "removeButton",
        "ageScanButton",
        "ageScanSweepButton",
        "generateModalityButton",
        "modalityCompareButton",
        "downloadButton",
    )

    def __init__(self, parent=None) -> None:
        # Set before the base class's __init__: without a parent it calls setup() at once.
        self.logic = None  # set before setup() to inject one (tests)
        self._parameterNode = self._parameterNodeGuiTag = self._pinned = self._pinnedModality = None
        self._updatingCards = self._downloadable = self._modalityReady = False
        self._licenceModel = None
        VTKObservationMixin.__init__(self)
        ScriptedLoadableModuleWidget.__init__(self, parent)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SynthBrain.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = self.logic or SynthBrainLogic()
        self.selectors = panel.ModelSelectors({f: getattr(self.ui, name) for f, name in self.MODEL_SELECTORS.items()})
        path, name = next(iter(self.CHOICE_SELECTORS.items()))
        self.modalityChoice = modality_panel.ChoiceSelector(getattr(self.ui, name), path)
        buttons = {name: getattr(self.ui, name) for name in self.RUN_BUTTONS}
        self.runs = PanelRuns(buttons, self.ui.progressBar, self.ui.statusLabel, self._showError)
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
            (ui.removeButton, self._removalTask, self._showRemoval),
            (ui.ageScanButton, self._ageingTask, self._showAgeing),
            (ui.ageScanSweepButton, self._ageingSweepTask, self._showSweep),
            (ui.generateModalityButton, self._modalityTask, self._showVolume),
            (ui.modalityCompareButton, self._modalityComparisonTask, self._showModalityComparison),
            (ui.downloadButton, self._downloadTask, lambda installed: self._refreshModels(force=True)),
        ):
            button.clicked.connect(lambda checked=False, b=button, t=task, d=done: self._start(b, t, d))
        ui.randomizeSeedButton.clicked.connect(lambda: setattr(self._parameterNode.run, "seed", _randomSeed()))
        ui.randomizeLesionSeedButton.clicked.connect(
            lambda: setattr(self._parameterNode.painting, "seed", _randomSeed())
        )
        ui.randomizeModalitySeedButton.clicked.connect(
            lambda: setattr(self._parameterNode.modality, "seed", _randomSeed())
        )
        ui.pinButton.clicked.connect(self.onPin)
        ui.modalityPinButton.clicked.connect(self.onPinModality)
        ui.useTemplateButton.clicked.connect(self.onUseTemplate)
        ui.addLesionSegmentsButton.clicked.connect(self.onAddLesionSegments)
        ui.refreshModelsButton.clicked.connect(lambda: self._refreshModels(force=True))
        ui.modelSelector.currentIndexChanged.connect(self._updateModelStatus)
        ui.rawValuesCheckBox.toggled.connect(lambda checked: self._applyCard(BRAIN_KIND, setDefaults=True))
        # "activated" fires on a user's choice only (not when a saved scene restores the selection):
        # only then do the sliders take the new card's defaults.
        ui.brainModelSelector.activated.connect(lambda index: self._applyCard(BRAIN_KIND, setDefaults=True))
        ui.labelModelSelector.activated.connect(lambda index: self._applyCard(LABELS_KIND, setDefaults=True))
        ui.modalityModelSelector.activated.connect(lambda index: self._applyCard(MODALITY_KIND, setDefaults=True))

    def cleanup(self) -> None:
        self.runs.cancel()
        self._releaseEditor()
        self.removeObservers()

    def onReload(self) -> None:
        """Reload the helper packages too, not only the module file (developer mode's Reload)."""
        for name in [n for n in sys.modules if n.split(".")[0] in ("SynthBrainSlicer", "SynthBrainLib")]:
            del sys.modules[name]
        ScriptedLoadableModuleWidget.onReload(self)

    def enter(self) -> None:
        self.initializeParameterNode()
        self.ui.segmentEditorWidget.installKeyboardShortcuts()
        self.ui.segmentEditorWidget.setupViewObservations()

    def exit(self) -> None:
        # As Slicer's own Segment Editor module: an editor nobody sees must not observe the views.
        self.ui.segmentEditorWidget.setActiveEffect(None)
        self.ui.segmentEditorWidget.uninstallKeyboardShortcuts()
        self.ui.segmentEditorWidget.removeViewObservations()
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self.runs.cancel()  # its result would belong to the closed scene: discard it
        self.setParameterNode(None)
        self._releaseEditor()

    def _releaseEditor(self) -> None:
        self.ui.segmentEditorWidget.setSegmentationNode(None)
        self.ui.segmentEditorWidget.removeViewObservations()

    def onSceneEndClose(self, caller, event) -> None:
        self.ui.segmentEditorWidget.setMRMLSegmentEditorNode(views.segment_editor_node(slicer.mrmlScene))
        if getattr(self.parent, "isEntered", False):
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        self._refreshModels()

    def setParameterNode(self, parameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.selectors.disconnect()
            self.modalityChoice.disconnect()
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.selectors.connect(self._parameterNode)
            self.modalityChoice.connect(self._parameterNode)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        if self._parameterNode is None or self._updatingCards:
            return
        self.selectors.update()
        self.modalityChoice.update()
        painting = self._parameterNode.painting
        views.sync_segment_editor(self.ui.segmentEditorWidget, painting.segmentation, painting.reference)
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
        p = self._parameterNode
        for kind in panel.fill_model_selectors(
            self.ui.modelSelector, self.selectors, statuses, p, self.logic.defaultModel
        ):
            self._applyCard(kind, setDefaults=True)  # a new scene: an installed model and its card's defaults
        self._applyCard(BRAIN_KIND, setDefaults=False)
        self._applyCard(LABELS_KIND, setDefaults=False)
        self._applyCard(MODALITY_KIND, setDefaults=False)
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
        # A licence the card asks to accept: the box shows it, and is ticked anew for each model.
        needsLicence, box = bool(card.source.get("licence_acceptance")), self.ui.licenceCheckBox
        box.setVisible(needsLicence)
        box.enabled = needsLicence and not status.installed
        box.toolTip = _("Licence of {model}: {licence}").format(model=card.id, licence=card.licence)
        if modelId != self._licenceModel:
            box.checked, self._licenceModel = False, modelId
        self._updateButtons()

    def _applyCard(self, kind: str, setDefaults: bool) -> None:
        if kind == MODALITY_KIND:
            return self._applyModalityCard(self._card("modalityModel"), setDefaults)
        card = self._card("brainModel" if kind == BRAIN_KIND else "labelModel")
        if card is None or kind == IMAGE_KIND:
            return
        self._updatingCards = True  # the parameter-node echoes of these changes are not user edits
        try:
            if kind == BRAIN_KIND:
                panel.apply_brain_card(self.ui, self._parameterNode, card, setDefaults)
            else:
                painting = self._parameterNode.painting
                panel.apply_conditions(self.ui, painting, card, panel.LESION_CONDITIONS, setDefaults)
        finally:
            self._updatingCards = False

    def _applyModalityCard(self, card, setDefaults: bool) -> None:
        """The modality section takes the chosen card's names and ranges, or is disabled without one."""
        self._modalityReady = card is not None and card.kind == MODALITY_KIND
        for name in modality_panel.MODALITY_WIDGETS:
            getattr(self.ui, name).enabled = self._modalityReady
        if self._modalityReady:
            self._updatingCards = True
            try:
                modality_panel.apply_modality_card(self.ui, self._parameterNode, card, setDefaults, self.modalityChoice)
            finally:
                self._updatingCards = False
        self._updateButtons()

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
            question = _("Which weights of {model} is this file?").format(model=modelId)
            component = keys[0] if len(keys) == 1 else _choose(question, keys)
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
            run = self._parameterNode.run  # the logic's defaults for what a task's settings leave open
            self.logic.preset = "published" if run.published else "fast"
            self.logic.guidance = run.guidance or None
        if self.runs.click(button, makeTask, onDone):
            self._updateButtons()
            self._timer.start()

    def _pollRun(self) -> None:
        if not self.runs.poll():
            self._timer.stop()
            self._updateButtons()

    def _updateButtons(self) -> None:
        self.runs.allowed = {
            "compareButton": self._pinned is not None,
            "downloadButton": self._downloadable,
            "generateModalityButton": self._modalityReady,
            "modalityCompareButton": self._modalityReady and self._pinnedModality is not None,
        }
        self.runs.updateButtons()
        for name in ("importButton", "refreshModelsButton", "useTemplateButton", "pinButton"):
            getattr(self.ui, name).enabled = not self.runs.running
        self.ui.modalityPinButton.enabled = self._modalityReady and not self.runs.running
        if self._parameterNode is not None:  # 'Model default' takes the preset's steps
            self.ui.stepsSpinBox.enabled = self._parameterNode.run.sampler is not Sampler.DEFAULT

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
        p = self._parameterNode.painting
        settings = panel.painting_settings(self._parameterNode)
        return self.logic.synthesisTask(
            p.segmentation, settings, sequence=p.sequence.value, referenceVolumeNode=p.reference
        )

    def _insertionTask(self):
        p = self._parameterNode.painting
        settings = panel.painting_settings(self._parameterNode)
        return self.logic.insertionTask(
            p.reference,
            p.segmentation,
            settings,
            sequence=p.sequence.value,
            margin=p.margin,
            existingLesionsNode=p.existingLesions,
            skullStripped=p.skullStripped.value,
        )

    def _removalTask(self):
        p = self._parameterNode.painting
        settings = panel.painting_settings(self._parameterNode)
        return self.logic.removalTask(
            p.reference, p.segmentation, settings, sequence=p.sequence.value, margin=p.margin,
            skullStripped=p.skullStripped.value,
        )  # fmt: skip

    def _ageingTask(self):
        return self.logic.ageingTask(**panel.ageing_request(self._parameterNode))

    def _ageingSweepTask(self):
        return self.logic.ageingSweepTask(**panel.ageing_request(self._parameterNode, sweep=True))

    def _downloadTask(self):
        modelId = panel.selected_data(self.ui.modelSelector)
        return self.logic.downloadTask(modelId, acceptLicence=self.ui.licenceCheckBox.checked)

    def _modalityTask(self):
        return self.logic.modalityTask(**modality_panel.modality_request(self._parameterNode))

    def onPinModality(self) -> None:
        self._pinnedModality = modality_panel.modality_choice(self._parameterNode)
        self.ui.modalityCompareLabel.text = _("A: {modality}").format(
            modality=modality_panel.describe_modality(self._pinnedModality)
        )
        self._updateButtons()

    def _modalityComparisonTask(self):
        request = modality_panel.modality_compare_request(self._pinnedModality, self._parameterNode)
        return self.logic.modalityComparisonTask(**request)

    # ---- showing results ---------------------------------------------------------------------------
    def _showVolume(self, volumeNode) -> None:
        slicer.util.setSliceViewerLayers(background=volumeNode, fit=True)

    def _showBrain(self, volumeNode) -> None:
        self._showVolume(volumeNode)
        self.ui.measuredLabel.text = panel.measured_text(measured_volumes(volumeNode), mrml.provenance_of(volumeNode))

    def _showSweep(self, sequenceNode) -> None:
        proxy = views.sweep_proxy(slicer.mrmlScene, sequenceNode, slicer.modules.sequences.logic())
        if proxy is not None:
            self._showVolume(proxy)
        slicer.modules.sequences.showSequenceBrowser(views.sweep_browser(slicer.mrmlScene, sequenceNode))

    def _showComparison(self, nodes) -> None:
        slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
        views.show_side_by_side(slicer.mrmlScene, *nodes)

    def _showModalityComparison(self, nodes) -> None:
        slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
        views.show_beside(slicer.mrmlScene, *nodes)

    def _showInsertion(self, nodes) -> None:
        volume, lesions = nodes
        slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
        views.show_beside(slicer.mrmlScene, self._parameterNode.painting.reference, volume, lesions)

    def _showRemoval(self, volume) -> None:
        slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
        views.show_beside(slicer.mrmlScene, self._parameterNode.painting.reference, volume)

    def _showAgeing(self, nodes) -> None:
        aged, atrophy = nodes
        slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
        views.show_ageing(slicer.mrmlScene, self._parameterNode.ageing.scan, aged, atrophy)

    def onAddLesionSegments(self) -> None:
        p = self._parameterNode
        try:
            added = self.logic.addLesionSegments(p.painting.segmentation, model=p.imageModel or None)
        except Exception as exc:  # reported to the user in one sentence (unexpected ones also logged)
            return self._showError(exc)
        self.ui.statusLabel.text = _("Added segments: {names}.").format(names=", ".join(added) or _("none missing"))

    def _showTemplate(self, segmentationNode) -> None:
        p, model = self._parameterNode.painting, self._parameterNode.imageModel or None
        if p.reference is None:
            p.reference = self.logic.paintVolume(segmentationNode, model=model)
            self._showVolume(p.reference)
        p.segmentation = segmentationNode

    def onUseTemplate(self) -> None:
        p, model = self._parameterNode.painting, self._parameterNode.imageModel or None
        if not self._dependencies():
            return
        try:
            p.segmentation, p.reference = self.logic.paintingFrom(p.templateInput, model=model, reference=p.reference)
        except Exception as exc:  # reported to the user in one sentence (unexpected ones also logged)
            return self._showError(exc)
        self.ui.statusLabel.text = _("Added {name}.").format(name=p.segmentation.GetName())

    def _showError(self, exc) -> None:
        slicer.util.errorDisplay(panel.error_message(exc), windowTitle="SynthBrain")


def _randomSeed() -> int:
    return random.randint(0, MAX_SEED)


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
