"""SynthBrainLogic: synthesis into the MRML scene, usable from the Python console (no Qt).

Console example (inside Slicer)::

    from SynthBrain import SynthBrainLogic
    logic = SynthBrainLogic()
    brain = logic.generateBrain(age=72, sex="female", seed=3)            # volume node
    labels = logic.generateLabels(wmh=0.03, seed=4)                      # segmentation node
    flair = logic.synthesizeFromSegmentation(labels, sequence="FLAIR")   # volume node
    sweep = logic.ageSweep(50, 80, 7, sex="male", seed=3)                # sequence node
    aged, atrophy = logic.ageScan(t1, age=55, sex="female", toAge=75)    # a loaded scan, older
    t2 = logic.generateModalityImage(modality="T2w", skullStripped=True)  # a modality-image model

Every call takes ``progress(step, total)`` and ``cancel`` (a ``threading.Event`` or a callable).
Each ``generate...`` call is a :class:`~SynthBrainSlicer.tasks.Task` run in the calling thread, or
with ``background=True`` in a worker thread: the call then returns a
:class:`~SynthBrainSlicer.tasks.BackgroundRun` at once (``.fraction``, ``.cancel()``,
``.result()``), so a script need not freeze Slicer. The module widget runs the same tasks' ``compute``
in a worker thread and their ``apply`` on the main thread. Nothing is added to the scene unless the
computation succeeds.

SynthBrainLib (and so torch) is imported when first needed, not when Slicer loads the module.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from SynthBrainLib import errors
from SynthBrainLib.models.requests import check_request, resolve_seed, resolve_sequence  # numpy only
from SynthBrainLib.models.store_writing import check_licence_accepted  # torch-free
from SynthBrainLib.outputs.interrupts import is_cancelled

from . import brain_tasks, environment, image_tasks, painting, saving
from .choices import BRAIN_KIND, KIND_NAMES, LABELS_KIND, MODALITY_KIND  # noqa: F401 (MODALITY_KIND: for scripts)
from .dependencies import DependencyInstaller, InstallOutcome
from .modality_calls import ModalityCalls
from .scan_calls import PatientScanCalls
from .settings import RunSettings
from .tasks import BackgroundRun, ProgressCallback, Task


@dataclass(frozen=True)
class ModelStatus:
    """What the Model panel shows about one card."""

    id: str
    name: str
    kind: str
    installed: bool
    location: str
    folder: str
    sizeBytes: int
    missing: tuple[str, ...] = ()
    error: str = ""

    @property
    def summary(self) -> str:
        if self.error:
            return f"unusable: {self.error}"
        if not self.installed:
            return f"not installed (missing {', '.join(self.missing)})"
        return f"installed ({self.location}), {self.sizeBytes / 1e6:.1f} MB, {self.folder}"


#: Results each loaded pipeline keeps (a 64x80x64 demo brain is 1.3 MB; a full-size one 23 MB).
RESULT_CACHE_SIZE = 8


class SynthBrainLogic(PatientScanCalls, ModalityCalls):
    """Synthesis into a MRML scene.

    Args:
        scene: the MRML scene results go to (default: ``slicer.mrmlScene`` at call time).
        store: a ``SynthBrainLib.ModelStore`` (default: the user's cache plus the models shipped
            with this module).
        pipelineLoader: ``loader(model, device=..., store=...)`` returning a pipeline (default
            ``SynthBrainLib.load_pipeline``); tests inject tiny models this way.
        sequencesLogic: Slicer's Sequences logic, which creates the sweep browser's proxy volume
            (default ``slicer.modules.sequences.logic()`` when available).
    """

    def __init__(
        self,
        scene=None,
        store=None,
        pipelineLoader: Callable | None = None,
        sequencesLogic=None,
        dependencies: DependencyInstaller | None = None,
    ) -> None:
        self._scene = scene
        self.dependencies = dependencies or DependencyInstaller()
        self._store = store
        self._loader = pipelineLoader
        self._sequencesLogic = sequencesLogic
        self._pipelines: dict[tuple[str, ...], Any] = {}
        self._pipelineLock = threading.Lock()
        self._cards: dict[str, Any] | None = None
        self._statuses: dict[str, ModelStatus] | None = None
        #: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``; used when a call passes no device.
        self.device = "auto"
        #: ``None`` (the pipeline's default for the device) | ``float32`` | ``mixed`` | ``bfloat16`` | ``float16``.
        self.precision: str | None = None
        #: ``fast`` | ``published`` (SynthBrainLib.models.presets): sampler, steps and precision of a
        #: run that names none.
        self.preset = "fast"
        #: Classifier-free guidance scale of brain and label runs; ``None``: each model's default.
        self.guidance: float | None = None
        self._background: list[BackgroundRun] = []
        # Cooperative: in the module's SynthBrainLogic this is followed by Slicer's
        # ScriptedLoadableModuleLogic.__init__ (once; it calls super().__init__() itself).
        super().__init__()

    # ---- environment ---------------------------------------------------------------------------
    @property
    def scene(self):
        if self._scene is not None:
            return self._scene
        import slicer

        return slicer.mrmlScene

    @property
    def store(self):
        if self._store is None:
            environment.ensure_library_on_path()
            from SynthBrainLib.models.store import ModelStore, shipped_dirs

            extra = [d for d in environment.shipped_model_dirs() if d not in shipped_dirs()]
            self._store = ModelStore(shipped=[*extra, *shipped_dirs()])
        return self._store

    def sequencesLogic(self):
        if self._sequencesLogic is not None:
            return self._sequencesLogic
        import slicer

        modules = getattr(slicer, "modules", None)
        sequences = getattr(modules, "sequences", None)
        return sequences.logic() if sequences is not None else None

    def missingDependencies(self) -> list[str]:
        """Python requirements not satisfied yet (torch first); empty when ready."""
        return self.dependencies.missing()

    def installDependencies(self) -> InstallOutcome:
        """Install missing requirements: torch through the PyTorch extension, the rest with pip,
        never over a package Slicer ships. Shows no dialog; raises ``PyTorchExtensionMissing``
        when the PyTorch extension must be installed first (:meth:`installPyTorchExtension`)."""
        return self.dependencies.install()

    def installPyTorchExtension(self) -> InstallOutcome:
        """Install the PyTorch extension from the Extensions Manager (Slicer must restart afterwards)."""
        return self.dependencies.installPyTorchExtension()

    # ---- models --------------------------------------------------------------------------------
    def refreshModels(self) -> None:
        """Forget cached cards and statuses (after an import, or when model folders changed)."""
        self._cards = None
        self._statuses = None

    def cards(self) -> dict[str, Any]:
        """Every known model card by id (built-in, shipped and imported), read once per logic."""
        if self._cards is None:
            self._cards = dict(self.store.cards())
        return self._cards

    def card(self, modelId: str, kind: str | None = None):
        """The :class:`~SynthBrainLib.models.cards.ModelCard` of ``modelId`` (conditions, ranges, label
        schema, sequences); with ``kind``, an error unless the model is of that kind."""
        cards = self.cards()
        if modelId not in cards:
            raise errors.ModelNotFoundError(
                f"model {modelId!r} is not known; known models: {', '.join(sorted(cards)) or 'none'}"
            )
        card = cards[modelId]
        if kind is not None and card.kind != kind:
            raise errors.ConditionError(
                f"model {modelId} is a {KIND_NAMES.get(card.kind, card.kind)} model, not a {KIND_NAMES[kind]} model"
            )
        return card

    def knownCard(self, modelId: str | None):
        """The card of ``modelId``, or None for an empty or unknown id (a model saved in a scene
        from another computer: the panel lists it as "not installed")."""
        return self.cards().get(modelId) if modelId else None

    def listModels(self, kind: str | None = None) -> list[ModelStatus]:
        """Every known card (of ``kind``) with its install status, installed models first."""
        if self._statuses is None:
            statuses = {}
            for modelId, card in sorted(self.cards().items()):
                try:
                    found = self.store.locate(modelId, require_complete=False)
                except errors.SynthBrainError as exc:
                    statuses[modelId] = ModelStatus(modelId, card.name, card.kind, False, "", "", 0, (), str(exc))
                    continue
                missing = tuple(card.weights[k].file for k in found.missing)
                statuses[modelId] = ModelStatus(
                    modelId,
                    card.name,
                    card.kind,
                    found.complete,
                    found.location,
                    str(found.folder),
                    found.size_bytes,
                    missing,
                )
            self._statuses = statuses
        rows = [s for s in self._statuses.values() if kind is None or s.kind == kind]
        return sorted(rows, key=lambda s: (not s.installed, s.id))

    def modelStatus(self, modelId: str) -> ModelStatus:
        """Whether ``modelId`` is installed, where, and what is missing (see :meth:`listModels`)."""
        for status in self.listModels():
            if status.id == modelId:
                return status
        raise errors.ModelNotFoundError(f"model {modelId!r} is not known")

    def defaultModel(self, kind: str) -> str | None:
        """An installed model of ``kind``: imported or downloaded ones before shipped demos."""
        installed = [s for s in self.listModels(kind) if s.installed]
        installed.sort(key=lambda s: (s.location == "shipped", s.id))
        return installed[0].id if installed else None

    def resolveModel(self, model: str | None, kind: str) -> str:
        """``model`` (checked to be of ``kind``), or the installed model of that kind."""
        modelId = model or self.defaultModel(kind)
        if modelId is None:
            raise errors.ModelNotFoundError(
                f"no {KIND_NAMES[kind]} model is installed; import one in the Model section "
                "(or: synthbrain models import PATH)"
            )
        self.card(modelId, kind)
        return modelId

    def importModel(
        self, path: str | Path, model: str | None = None, component: str | None = None, allowUnverified: bool = False
    ):
        """Import a MONAI bundle folder, a model folder (card.json + weights) or one checkpoint."""
        # torch is imported here, not at module load: the module loads before dependencies exist.
        from SynthBrainLib.pipelines import pipeline_class

        installed = self.store.import_path(
            path, model=model, component=component, allow_unverified=allowUnverified, check_card=pipeline_class
        )
        self.refreshModels()
        self.clearPipelines(installed.card.id)
        return installed

    # ---- devices and pipelines ------------------------------------------------------------------
    @staticmethod
    def deviceInfo() -> dict[str, Any]:
        """``{"cuda": bool, "name": str | None, "memoryGB": float | None, "text": str}``."""
        import torch

        if not torch.cuda.is_available():
            return {
                "cuda": False,
                "name": None,
                "memoryGB": None,
                "text": "no CUDA GPU found: synthesis runs on the CPU",
            }
        props = torch.cuda.get_device_properties(0)
        memory = props.total_memory / 1e9
        return {"cuda": True, "name": props.name, "memoryGB": memory, "text": f"GPU: {props.name}, {memory:.1f} GB"}

    def pipeline(self, modelId: str, device: str | None = None, precision: str | None = None, preset=None):
        """The loaded pipeline of a model on a device, precision and preset, cached (loading weights
        takes seconds)."""
        device = device or self.device
        precision = precision or self.precision
        preset = preset or self.preset
        key = (modelId, device, precision, preset)
        with self._pipelineLock:
            if key not in self._pipelines:
                if self._loader is not None:
                    loader = self._loader
                else:
                    from SynthBrainLib import load_pipeline as loader
                # One copy of a model at a time: switching device frees the other copy's (GPU) memory.
                self._drop(lambda k: k[0] == modelId)
                options = {"preset": preset, **({"precision": precision} if precision else {})}
                pipe = loader(modelId, device=device, store=self.store, **options)
                if isinstance(getattr(pipe, "cache_size", None), int):
                    # Keep recent results: moving a slider back to an earlier value is then instant.
                    pipe.cache_size = max(pipe.cache_size, RESULT_CACHE_SIZE)
                self._pipelines[key] = pipe
            return self._pipelines[key]

    def clearPipelines(self, modelId: str | None = None) -> None:
        """Drop cached pipelines (of one model) so that their memory can be freed."""
        with self._pipelineLock:
            self._drop(lambda k: modelId is None or k[0] == modelId)

    def _drop(self, which: Callable[[tuple], bool]) -> None:
        keys = [k for k in self._pipelines if which(k)]
        for key in keys:
            del self._pipelines[key]
        if keys:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    # ---- checks on the main thread (fast feedback, before any thread starts) --------------------
    def check(self, card, conditions: dict[str, Any], raw, settings: RunSettings, guidance=None, **image: Any):
        """Everything about a request that the card decides (SynthBrainLib's one request check), and
        whether this machine has the device; one line on failure. Returns the library's checked request.

        ``guidance``: the run's own scale (modality images); brain and label runs take the logic's
        :attr:`guidance`. ``image``: ``modality``, ``skull_stripped``, ``size``, ``spacing`` of a
        modality-image request."""
        from SynthBrainLib.pipelines.device import resolve_device  # torch: not at module load

        if guidance is None and card.kind in (BRAIN_KIND, LABELS_KIND):  # the runs that take the logic's
            guidance = self.guidance
        request = check_request(
            card,
            conditions=conditions,
            raw=raw,
            sampler=settings.sampler,
            steps=settings.steps,
            preset=self.preset,
            guidance=guidance,
            seed=settings.seed,
            precision=settings.precision or self.precision,
            **image,
        )
        resolve_device(settings.device or self.device)
        return request

    @staticmethod
    def checkSequence(card, sequence: str) -> str:
        """The sequence's name as the card spells it (``flair`` -> ``FLAIR``), or a one-line error."""
        return resolve_sequence(card, sequence)

    @staticmethod
    def resolveSeed(seed: int | None) -> int:
        """``seed``, checked, or one drawn now (so that the result's provenance can repeat it)."""
        return resolve_seed(seed)

    @staticmethod
    def _settings(settings: RunSettings | None, keywords: dict[str, Any]) -> tuple[RunSettings, dict[str, Any]]:
        """A task's settings: given whole (the panel), or from a console call's keywords."""
        given, rest = RunSettings.split(keywords)
        if settings is None:
            return given, rest
        if given != RunSettings():
            raise errors.ConditionError("give the run settings either as settings= or as keywords, not both")
        return settings, rest

    @staticmethod
    def measuredVolumes(node) -> dict[str, float] | None:
        """The ventricular and brain volume (mL) measured in a generated brain (``measure=True``), or None."""
        return brain_tasks.measured_volumes(node)

    @staticmethod
    def kept(node):
        """Results keep their synthetic mark and provenance when saved to a file (a JSON sidecar)."""
        if node is not None and hasattr(node, "AddDefaultStorageNode"):
            saving.keep_provenance_on_save(node)
        return node

    # ---- tasks (built in brain_tasks, image_tasks; here so a script finds them on the logic) -------
    def brainTask(self, settings: RunSettings | None = None, **keywords: Any) -> Task:
        """A conditioned brain (:func:`~SynthBrainSlicer.brain_tasks.brain`): keywords are the model's
        conditions in real units, ``raw``, ``measure``, and the :class:`RunSettings` fields."""
        settings, rest = self._settings(settings, keywords)
        return brain_tasks.brain(self, settings, **rest)

    def labelsTask(self, settings: RunSettings | None = None, **keywords: Any) -> Task:
        """A label map (:func:`~SynthBrainSlicer.brain_tasks.labels`): lesion fractions, ``raw``, run settings."""
        settings, rest = self._settings(settings, keywords)
        return brain_tasks.labels(self, settings, **rest)

    def compareTask(self, conditionsA: dict, conditionsB: dict, settings: RunSettings | None = None, **keywords):
        """Two brains, same seed, and B - A (:func:`~SynthBrainSlicer.brain_tasks.compare`); ``rawA``, ``rawB``."""
        settings, rest = self._settings(settings, keywords)
        return brain_tasks.compare(self, conditionsA, conditionsB, settings, **rest)

    def ageSweepTask(self, ageFrom: float, ageTo: float, count: int, settings: RunSettings | None = None, **keywords):
        """The same brain at ``count`` ages (:func:`~SynthBrainSlicer.brain_tasks.age_sweep`)."""
        settings, rest = self._settings(settings, keywords)
        return brain_tasks.age_sweep(self, ageFrom, ageTo, count, settings, **rest)

    def synthesisTask(self, segmentationNode, settings: RunSettings | None = None, **keywords) -> Task:
        """An image from a painted segmentation (:func:`~SynthBrainSlicer.image_tasks.synthesis`):
        ``sequence``, ``referenceVolumeNode``, ``alignment``, run settings."""
        settings, rest = self._settings(settings, keywords)
        return image_tasks.synthesis(self, segmentationNode, settings, **rest)

    def downloadTask(self, model: str, acceptLicence: bool = False) -> Task:
        """Download a model's public weights into the model cache (resumable; checked against the
        card's checksums; ``compute`` reports bytes as progress and stops at ``cancel``, keeping the
        partial file for the next attempt). ``apply`` gives the installed model. ``acceptLicence``:
        the user has read the card's licence and accepts it (required by cards that ask for it, e.g.
        NV-Generate-MR-Brain; without it the store refuses before fetching anything)."""
        card = self.card(model)
        check_licence_accepted(card, acceptLicence)  # refused here, on the main thread, before a worker starts

        def compute(progress, cancel):
            def bytes_done(name, done, total):
                if is_cancelled(cancel):
                    raise errors.SynthesisCancelled(
                        "download cancelled; the partial file is kept and the next download resumes it"
                    )
                if progress is not None:
                    progress(int(done), int(total or 0))

            return self.store.download(card.id, progress=bytes_done, accept_licence=acceptLicence)

        def apply(installed):
            self.refreshModels()
            self.clearPipelines(card.id)
            return installed

        return Task(f"{card.id} download", compute, apply)

    # ---- label templates (main thread, instant) ----------------------------------------------------
    def templateFromNode(self, node, *, model: str | None = None, name: str | None = None):
        """A new schema segmentation to paint on, from a label-map volume or a segmentation (unchanged)."""
        return painting.template_from_node(self, node, model=model, name=name)

    def paintingFrom(self, node, *, model: str | None = None, reference=None):
        """``(segmentation, volume to paint on)`` from a user's label map or segmentation: a new
        schema template, and ``reference`` or else a new volume of its labels on its grid (the
        Segment Editor paints on a volume)."""
        if node is None:
            raise errors.ConditionError("select a segmentation or a label map to use as the template")
        segmentation = self.templateFromNode(node, model=model)
        return segmentation, reference or self.paintVolume(segmentation, model=model)

    def paintVolume(self, segmentationNode, *, model: str | None = None):
        """A scalar volume of the template's label values on its grid, to paint on in the Segment Editor."""
        return painting.paint_volume(self, segmentationNode, model=model)

    def addLesionSegments(self, segmentationNode, *, model: str | None = None) -> list[str]:
        """Add the empty lesion segments (``wmh``, ``tumour``, ``edema``, ``gdtumour``, in the model's
        colours) that ``segmentationNode`` lacks, to paint on a scan; returns the names added."""
        return painting.add_lesion_segments(self, segmentationNode, model=model)

    # ---- console API ---------------------------------------------------------------------------------
    def _run(self, task: Task, progress, cancel, background: bool):
        if not background:
            return task.run(progress, cancel)
        return self.startInBackground(task, progress)

    def startInBackground(self, task: Task, progress: ProgressCallback | None = None) -> BackgroundRun:
        """Start ``task`` in a worker thread; returns its :class:`~SynthBrainSlicer.tasks.BackgroundRun`.

        ``run.result()`` (on the main thread) waits and adds the nodes. Inside Slicer the module's
        logic also adds them by itself when the run ends: a main-thread timer calls
        :meth:`finishBackgroundRuns`.
        """
        run = BackgroundRun(task, progress=progress).start()
        self._background.append(run)
        return run

    def finishBackgroundRuns(self) -> int:
        """On the main thread: add the nodes of background runs that have ended (their errors are
        logged; ``run.result()`` raises them again). Returns how many runs are still going."""
        for run in [r for r in self._background if r.done]:
            self._background.remove(run)
            if not run.finished:
                try:
                    run.finish()
                except Exception as exc:  # the script sees it again through run.result()
                    logging.info("SynthBrain background run %s ended without a result: %s", run.task.title, exc)
        return len(self._background)

    def generateBrain(
        self, *, progress: ProgressCallback | None = None, cancel=None, background: bool = False, **kwargs: Any
    ):
        """A synthetic brain volume node, e.g. ``generateBrain(age=72, sex="female", seed=3)``.

        Keyword arguments: the model's conditions in real units (unset ones take the card's
        defaults), ``model``, ``seed``, ``sampler``, ``steps``, ``device``, ``precision``, ``raw``,
        ``preview``, ``measure``. ``background=True`` returns a running
        :class:`~SynthBrainSlicer.tasks.BackgroundRun` instead of waiting.
        """
        return self._run(self.brainTask(**kwargs), progress, cancel, background)

    def generateLabels(
        self, *, progress: ProgressCallback | None = None, cancel=None, background: bool = False, **kwargs: Any
    ):
        """A synthetic label-map segmentation node, e.g. ``generateLabels(wmh=0.03, seed=4)``.

        Keyword arguments: the model's lesion conditions (``wmh``, ``tumour``, ``edema``,
        ``gdtumour``: fractions of the brain), ``model``, ``seed``, ``sampler``, ``steps``,
        ``device``, ``precision``, ``raw``, ``preview`` (see :meth:`labelsTask`); ``progress(step,
        total)``, ``cancel`` (a ``threading.Event`` or a callable) and ``background`` as for
        :meth:`generateBrain`.
        """
        return self._run(self.labelsTask(**kwargs), progress, cancel, background)

    def synthesizeFromSegmentation(
        self,
        segmentationNode,
        *,
        progress: ProgressCallback | None = None,
        cancel=None,
        background: bool = False,
        **kwargs: Any,
    ):
        """A synthetic image volume node aligned with ``segmentationNode``, e.g. ``sequence="FLAIR"``.

        Keyword arguments: ``sequence`` (T1 | FLAIR | T2), ``model``, ``referenceVolumeNode`` (the
        grid to render on; default: the volume the segmentation was painted on), ``seed``,
        ``alignment`` ("world", or "centre" for labels drawn outside the model's field of view),
        ``device`` (see :meth:`synthesisTask`); ``progress``, ``cancel`` and ``background`` as for
        :meth:`generateBrain`. Segments are matched to the model's classes by name.
        """
        return self._run(self.synthesisTask(segmentationNode, **kwargs), progress, cancel, background)

    def ageSweep(
        self,
        ageFrom: float,
        ageTo: float,
        count: int,
        *,
        progress: ProgressCallback | None = None,
        cancel=None,
        background: bool = False,
        **kwargs: Any,
    ):
        """A sequence node of the same brain at ``count`` ages (with a browser to scrub through it).

        E.g. ``ageSweep(50, 80, 7, sex="female", seed=3)``. Keyword arguments: the other
        conditions (held fixed), ``model``, ``seed``, ``sampler``, ``steps``, ``device``,
        ``precision``, ``raw``, ``preview`` (see :meth:`ageSweepTask`); ``progress``, ``cancel`` and
        ``background`` as for :meth:`generateBrain`.
        """
        return self._run(self.ageSweepTask(ageFrom, ageTo, count, **kwargs), progress, cancel, background)

    def compareBrains(
        self,
        conditionsA: dict[str, Any],
        conditionsB: dict[str, Any],
        *,
        progress: ProgressCallback | None = None,
        cancel=None,
        background: bool = False,
        **kwargs: Any,
    ):
        """Two brains with the same seed and their difference: ``(volumeA, volumeB, differenceBminusA)``.

        E.g. ``compareBrains({"age": 50}, {"age": 80}, seed=3)``. Keyword arguments as for
        :meth:`compareTask` (``model``, ``seed``, ``sampler``, ``steps``, ``device``, ``precision``,
        ``rawA``, ``rawB``, ``preview``); ``progress``, ``cancel`` and ``background`` as for
        :meth:`generateBrain`.
        """
        return self._run(self.compareTask(conditionsA, conditionsB, **kwargs), progress, cancel, background)

    def downloadModel(
        self,
        model: str,
        *,
        acceptLicence: bool = False,
        progress: ProgressCallback | None = None,
        cancel=None,
        background: bool = False,
    ):
        """Download a model's public weights (e.g. ``"brain-ldm"``), checked against the card's sha256.
        ``acceptLicence=True``: you have read the model's licence (``logic.card(model).licence``) and
        accept it; models whose card asks for that (``nv-generate-mr-brain``) are refused without it."""
        return self._run(self.downloadTask(model, acceptLicence=acceptLicence), progress, cancel, background)
