"""SynthBrainLogic: synthesis into the MRML scene, usable from the Python console (no Qt).

Console example (inside Slicer)::

    from SynthBrain import SynthBrainLogic
    logic = SynthBrainLogic()
    brain = logic.generateBrain(age=72, sex="female", seed=3)            # volume node
    labels = logic.generateLabels(wmh=0.03, seed=4)                      # segmentation node
    flair = logic.synthesizeFromSegmentation(labels, sequence="FLAIR")   # volume node
    sweep = logic.ageSweep(50, 80, 7, sex="male", seed=3)                # sequence node

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

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from SynthBrainLib import errors
from SynthBrainLib.insertion.segmentations import LESION_NAMES  # numpy only: loads before torch is installed
from SynthBrainLib.models.conditioning import resolve_conditions, resolve_guidance, resolve_sampler  # numpy only
from SynthBrainLib.outputs.interrupts import is_cancelled

from . import environment, saving
from . import scene as mrml
from .choices import BRAIN_KIND, IMAGE_KIND, KIND_NAMES, LABELS_KIND
from .dependencies import DependencyInstaller, InstallOutcome
from .panel import AGE
from .tasks import BackgroundRun, ProgressCallback, Task

#: Node attribute with the volumes measured in a generated brain (JSON, mL).
MEASURED_ATTRIBUTE = "SynthBrain.MeasuredVolumes"


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


class SynthBrainLogic:
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

    def _model(self, model: str | None, kind: str) -> str:
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

    # ---- validation on the main thread (fast feedback, before any thread starts) -----------------
    def _check(self, card, conditions: dict[str, Any], raw, sampler, steps, device) -> None:
        from SynthBrainLib.pipelines.device import resolve_device  # torch: not at module load

        resolve_device(device or self.device)
        resolve_conditions(card.conditioning, conditions, raw)
        if card.sampling is not None:
            resolve_sampler(card.sampling, card.scheduler, sampler, steps, self.preset)
            if card.kind in (BRAIN_KIND, LABELS_KIND):  # the runs that take a guidance scale
                resolve_guidance(card.id, card.sampling, self.guidance)

    @staticmethod
    def _seed(seed: int | None) -> int:
        from SynthBrainLib.pipelines.base import SynthesisPipeline

        return SynthesisPipeline.resolve_seed(seed)

    # ---- tasks ---------------------------------------------------------------------------------
    def brainTask(
        self,
        *,
        model: str | None = None,
        seed: int | None = None,
        sampler: str | None = None,
        steps: int | None = None,
        device: str | None = None,
        precision: str | None = None,
        raw: dict[str, float] | None = None,
        preview: bool = False,
        measure: bool = False,
        **conditions: Any,
    ) -> Task:
        """A conditioned brain: ``compute`` gives a SynthesisResult, ``apply`` a volume node.

        ``preview``: the pipeline's quick preview (few DPM-Solver++ steps) unless ``sampler``/``steps`` are given.
        ``measure``: also measure the result's ventricular and brain volume (mL) from the image, with
        SynthBrainLib's image-based estimators (not the model), into the node's
        ``SynthBrain.MeasuredVolumes`` attribute (see :func:`measuredVolumes`).
        """

        def apply(scene, card, seed, result, measured):
            name = f"SynthBrain {card.output.modality} {_description(result)} seed {seed}"
            node = mrml.add_result_volume(scene, result.image, result.affine, name, result.provenance)
            if measured:
                node.SetAttribute(MEASURED_ATTRIBUTE, json.dumps(measured, sort_keys=True))
            return node

        return self._conditionedTask(
            BRAIN_KIND,
            "brain",
            apply,
            model,
            seed,
            sampler,
            steps,
            device,
            precision,
            raw,
            conditions,
            preview,
            measure,
        )

    def labelsTask(
        self,
        *,
        model: str | None = None,
        seed: int | None = None,
        sampler: str | None = None,
        steps: int | None = None,
        device: str | None = None,
        precision: str | None = None,
        raw: dict[str, float] | None = None,
        preview: bool = False,
        **conditions: Any,
    ) -> Task:
        """A label map from the label generator: ``apply`` gives a schema segmentation node."""

        def apply(scene, card, seed, result, measured):
            real = (result.provenance.get("conditions") or {}).get("real_units", {})
            lesions = ", ".join(f"{k} {v:g}" for k, v in real.items() if isinstance(v, (int, float)) and v)
            name = f"SynthBrain labels {lesions or 'healthy'} seed {seed}"
            return mrml.labels_to_segmentation(
                scene, result.labels, result.affine, card.labels, name, result.provenance
            )

        return self._conditionedTask(
            LABELS_KIND, "labels", apply, model, seed, sampler, steps, device, precision, raw, conditions, preview
        )

    def _conditionedTask(
        self,
        kind,
        what,
        apply,
        model,
        seed,
        sampler,
        steps,
        device,
        precision,
        raw,
        conditions,
        preview=False,
        measure=False,
    ) -> Task:
        """Validate on the calling thread, generate in ``compute``, add nodes in ``apply``."""
        modelId = self._model(model, kind)
        card = self.card(modelId)
        self._check(card, conditions, raw, sampler, steps, device)
        seed = self._seed(seed)
        scene = self.scene

        def compute(progress, cancel):
            result = self._generate(
                modelId, device, precision, seed, sampler, steps, raw, preview, conditions, progress, cancel
            )
            return result, (measure_volumes(result.image, result.affine) if measure else None)

        return Task(
            f"{modelId} {what}", compute, lambda payload: _kept(apply(scene, card, seed, *payload)), scene=scene
        )

    def _generate(self, modelId, device, precision, seed, sampler, steps, raw, preview, conditions, progress, cancel):
        pipe = self.pipeline(modelId, device, precision)
        options = {"preview": True} if preview else {}
        if self.guidance is not None:
            options["guidance"] = self.guidance
        return pipe.generate(
            seed=seed, sampler=sampler, steps=steps, raw=raw, progress=progress, cancel=cancel, **options, **conditions
        )

    def compareTask(
        self,
        conditionsA: dict[str, Any],
        conditionsB: dict[str, Any],
        *,
        model: str | None = None,
        seed: int | None = None,
        sampler: str | None = None,
        steps: int | None = None,
        device: str | None = None,
        precision: str | None = None,
        rawA: dict[str, float] | None = None,
        rawB: dict[str, float] | None = None,
        preview: bool = False,
    ) -> Task:
        """Two brains from the same seed (so the same noise) under two sets of conditions, and B - A.

        ``apply`` gives ``(volumeA, volumeB, difference)``: three volume nodes on one grid; the
        difference is float32 in the image's intensity units, marked synthetic with both provenances.
        """
        modelId = self._model(model, BRAIN_KIND)
        card = self.card(modelId)
        for conditions, raw in ((conditionsA, rawA), (conditionsB, rawB)):
            self._check(card, conditions, raw, sampler, steps, device)
        seed = self._seed(seed)
        scene = self.scene

        def compute(progress, cancel):
            results = []
            for index, (conditions, raw) in enumerate(((conditionsA, rawA), (conditionsB, rawB))):

                def half(step, total, _i=index):
                    if progress is not None:
                        progress(_i * total + step, 2 * total)

                results.append(
                    self._generate(
                        modelId, device, precision, seed, sampler, steps, raw, preview, conditions, half, cancel
                    )
                )
            return results

        def apply(results):
            a, b = results
            nameA = f"SynthBrain A {_description(a)} seed {seed}"
            nameB = f"SynthBrain B {_description(b)} seed {seed}"
            volumeA = mrml.add_result_volume(scene, a.image, a.affine, nameA, a.provenance)
            volumeB = mrml.add_result_volume(scene, b.image, b.affine, nameB, b.provenance)
            delta = (b.image - a.image).astype(np.float32)
            limit = float(np.abs(delta).max()) or 1.0
            provenance = {
                "description": "difference B - A of two SynthBrain results with the same seed",
                "seed": seed,
                "model": a.provenance.get("model"),
                "a": a.provenance,
                "b": b.provenance,
            }
            difference = mrml.add_result_volume(
                scene, delta, a.affine, f"SynthBrain B - A seed {seed}", provenance, window=(-limit, limit)
            )
            return tuple(_kept(node) for node in (volumeA, volumeB, difference))

        return Task(f"{modelId} comparison", compute, apply, scene=scene)

    def downloadTask(self, model: str) -> Task:
        """Download a model's public weights into the model cache (resumable; checked against the
        card's checksums; ``compute`` reports bytes as progress and stops at ``cancel``, keeping the
        partial file for the next attempt). ``apply`` gives the installed model."""
        card = self.card(model)

        def compute(progress, cancel):
            def bytes_done(name, done, total):
                if is_cancelled(cancel):
                    raise errors.SynthesisCancelled(
                        "download cancelled; the partial file is kept and the next download resumes it"
                    )
                if progress is not None:
                    progress(int(done), int(total or 0))

            return self.store.download(card.id, progress=bytes_done)

        def apply(installed):
            self.refreshModels()
            self.clearPipelines(card.id)
            return installed

        return Task(f"{card.id} download", compute, apply)

    def synthesisTask(
        self,
        segmentationNode,
        *,
        sequence: str = "T1",
        model: str | None = None,
        referenceVolumeNode=None,
        seed: int | None = None,
        sampler: str | None = None,
        steps: int | None = None,
        device: str | None = None,
        precision: str | None = None,
        alignment: str = "world",
    ) -> Task:
        """An image rendered from a (painted) segmentation, on the segmentation's own grid.

        The segmentation is read here, on the main thread: into a label map with the model's
        label values, on ``referenceVolumeNode``'s grid or else the segmentation's reference
        geometry (the volume it was painted on). The pipeline resamples it to model space,
        synthesises, and resamples the image back, so the new volume overlays the segmentation
        voxel for voxel (it is put under the segmentation's parent transform too).
        """
        _require(segmentationNode, "vtkMRMLSegmentationNode", "select a segmentation to synthesise from")
        if referenceVolumeNode is not None:
            _require(referenceVolumeNode, "vtkMRMLScalarVolumeNode", "the reference must be a scalar volume")
        modelId = self._model(model, IMAGE_KIND)
        card = self.card(modelId)
        names = card.sequences.names if card.sequences is not None else ()
        if str(sequence).strip().lower() not in [n.lower() for n in names]:
            raise errors.ConditionError(f"sequence {sequence!r} is not one of {', '.join(names)} (model {modelId})")
        self._check(card, {}, None, sampler, steps, device)
        labels, affine = mrml.segmentation_to_labels(segmentationNode, card.labels, referenceVolumeNode)
        if not labels.any():
            raise errors.ConditionError(
                f"segmentation {segmentationNode.GetName()} is empty on its grid; paint at least one segment"
            )
        worldAffine = mrml.to_world(segmentationNode, affine)
        parent = segmentationNode.GetParentTransformNode()
        source = {
            "segmentation": segmentationNode.GetName(),
            "reference_volume": referenceVolumeNode.GetName() if referenceVolumeNode else None,
        }
        seed = self._seed(seed)
        scene = self.scene

        def compute(progress, cancel):
            pipe = self.pipeline(modelId, device, precision)
            return pipe.generate(
                labels,
                affine=worldAffine,
                sequence=sequence,
                seed=seed,
                sampler=sampler,
                steps=steps,
                alignment=alignment,
                progress=progress,
                cancel=cancel,
            )

        def apply(result):
            provenance = dict(result.provenance, slicer=source)
            seq = result.provenance.get("sequence", sequence)
            name = f"SynthBrain {seq} from {source['segmentation']} seed {seed}"
            return _kept(mrml.add_result_volume(scene, result.image, affine, name, provenance, parent_transform=parent))

        return Task(f"{modelId} {sequence}", compute, apply, scene=scene)

    def insertionTask(
        self,
        scanVolumeNode,
        segmentationNode,
        *,
        sequence: str,
        model: str | None = None,
        margin: float = 3.0,
        seed: int | None = None,
        device: str | None = None,
        tissueNode=None,
        tissueLabels: str = "model",
    ) -> Task:
        """Lesions painted on a patient's scan, inserted into a copy of that scan.

        The lesion segments of ``segmentationNode`` (named ``wmh``, ``tumour``, ``edema``,
        ``gdtumour``; tissue segments are ignored) are read on the scan's own grid, here on the main
        thread; the pipeline registers its template to the scan, synthesises the lesions in
        ``sequence`` and blends them in (see ``LabelToImagePipeline.insert``). ``apply`` adds a new
        volume (the scan's type and grid, every voxel beyond ``margin`` mm of the lesions unchanged)
        and a new segmentation of the inserted lesions, both marked synthetic, and returns them;
        the scan and the painted segmentation are not modified. ``tissueNode``: the patient's own
        tissue segmentation or label map (``tissueLabels`` ``model`` or ``freesurfer``) instead of
        the registered template's.
        """
        _require(scanVolumeNode, "vtkMRMLScalarVolumeNode", "select the scan to insert lesions into")
        if scanVolumeNode.IsA("vtkMRMLLabelMapVolumeNode"):
            raise errors.ConditionError(f"{scanVolumeNode.GetName()} is a label map; select an MR scan")
        _require(segmentationNode, "vtkMRMLSegmentationNode", "select the segmentation with the painted lesions")
        modelId = self._model(model, IMAGE_KIND)
        card = self.card(modelId)
        if card.template is None:
            raise errors.ConditionError(f"model {modelId} has no registration template; it cannot insert lesions")
        self._check(card, {}, None, None, None, device)
        labels, _ = mrml.segmentation_to_labels(segmentationNode, card.labels, scanVolumeNode)
        lesion_values = [c.value for c in card.labels if c.name in LESION_NAMES]
        lesions = np.where(np.isin(labels, lesion_values), labels, 0).astype(np.uint8)
        if not lesions.any():
            raise errors.ConditionError(
                f"segmentation {segmentationNode.GetName()} has no painted lesion on {scanVolumeNode.GetName()}; "
                f"paint a segment named {', '.join(n for n in LESION_NAMES)}"
            )
        scan = mrml.volume_array(scanVolumeNode)
        affine = mrml.to_world(scanVolumeNode, mrml.volume_affine(scanVolumeNode))
        tissue, tissueAffine, tissueScheme = None, None, tissueLabels
        if tissueNode is not None:
            if tissueNode.IsA("vtkMRMLSegmentationNode"):
                tissue, _ = mrml.segmentation_to_labels(tissueNode, card.labels, scanVolumeNode)
                tissueScheme = "model"
            else:
                # A label map on its own grid (FreeSurfer's aseg as Slicer loads an .mgz: 256^3, LIA):
                # the pipeline resamples it onto the scan's grid by world coordinates.
                _require(tissueNode, "vtkMRMLLabelMapVolumeNode", "the tissue must be a segmentation or a label map")
                tissue = mrml.volume_array(tissueNode)
                tissueAffine = mrml.to_world(tissueNode, mrml.volume_affine(tissueNode))
        seed = self._seed(seed)
        parent = scanVolumeNode.GetParentTransformNode()
        localAffine = mrml.volume_affine(scanVolumeNode)
        source = {"scan": scanVolumeNode.GetName(), "segmentation": segmentationNode.GetName()}
        scene = self.scene

        def compute(progress, cancel):
            pipe = self.pipeline(modelId, device, None)
            return pipe.insert(
                scan,
                affine,
                lesions,
                sequence=sequence,
                tissue=tissue,
                tissue_affine=tissueAffine,
                tissue_scheme=tissueScheme,
                margin_mm=margin,
                seed=seed,
                progress=progress,
                cancel=cancel,
            )

        def apply(result):
            provenance = dict(result.provenance, slicer=source)
            name = f"{source['scan']} with synthetic lesions seed {seed}"
            volume = mrml.add_result_volume(
                scene, result.image, localAffine, name, provenance, parent_transform=parent, keep_dtype=True
            )
            display, original = volume.GetDisplayNode(), scanVolumeNode.GetDisplayNode()
            if display is not None and original is not None:  # the same window as the scan, to compare
                display.SetAutoWindowLevel(False)
                display.SetWindowLevel(original.GetWindow(), original.GetLevel())
            truth = mrml.labels_to_segmentation(
                scene,
                result.labels,
                localAffine,
                [c for c in card.labels if c.name in LESION_NAMES],
                f"{source['scan']} inserted lesions seed {seed}",
                provenance,
                parent_transform=parent,
            )
            return _kept(volume), _kept(truth)

        return Task(f"{modelId} lesion insertion", compute, apply, scene=scene)

    def ageSweepTask(
        self,
        ageFrom: float,
        ageTo: float,
        count: int,
        *,
        model: str | None = None,
        seed: int | None = None,
        sampler: str | None = None,
        steps: int | None = None,
        device: str | None = None,
        precision: str | None = None,
        raw: dict[str, float] | None = None,
        preview: bool = False,
        **conditions: Any,
    ) -> Task:
        """The same brain (same seed and other conditions) at ``count`` ages from ``ageFrom`` to ``ageTo``.

        ``preview`` and ``precision`` apply to every item, as for :meth:`brainTask`.

        ``apply`` gives a sequence node indexed by age (its browser's ID is the sequence's
        ``SynthBrain.SequenceBrowser`` attribute).
        """
        modelId = self._model(model, BRAIN_KIND)
        card = self.card(modelId)
        if AGE not in card.conditioning.names:
            raise errors.ConditionError(f"model {modelId} has no '{AGE}' condition to sweep")
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or not 2 <= int(count) <= 200:
            raise errors.ConditionError(f"an age sweep needs 2 to 200 steps, got {count!r}")
        if AGE in conditions:
            raise errors.ConditionError("give the sweep's ages as ageFrom and ageTo, not age")
        ages = [round(float(a), 3) for a in np.linspace(float(ageFrom), float(ageTo), int(count))]
        if len({f"{a:g}" for a in ages}) < len(ages):  # the sequence is indexed by these texts
            raise errors.ConditionError(
                f"ages {float(ageFrom):g} to {float(ageTo):g} in {int(count)} steps are not distinct; widen "
                "the range or take fewer steps"
            )
        for age in (ages[0], ages[-1]):
            self._check(card, {**conditions, AGE: age}, raw, sampler, steps, device)
        seed = self._seed(seed)
        unit = card.conditioning.variable(AGE).unit
        scene = self.scene
        sequencesLogic = self.sequencesLogic()

        def compute(progress, cancel):
            results = []
            for index, age in enumerate(ages):
                if is_cancelled(cancel):
                    raise errors.SynthesisCancelled()

                def item_progress(step, total, _i=index):
                    if progress is not None:
                        progress(_i * total + step, len(ages) * total)

                results.append(
                    self._generate(
                        modelId,
                        device,
                        precision,
                        seed,
                        sampler,
                        steps,
                        raw,
                        preview,
                        {**conditions, AGE: age},
                        item_progress,
                        cancel,
                    )
                )
            return results

        def apply(results):
            name = f"SynthBrain age sweep {ages[0]:g}-{ages[-1]:g} {unit} seed {seed}"
            items = [(f"{age:g}", r.image, r.affine, r.provenance) for age, r in zip(ages, results)]
            summary = dict(
                results[0].provenance,
                conditions=None,
                description=name,
                sweep={
                    "variable": AGE,
                    "unit": unit,
                    "values": ages,
                    "fixed": dict(conditions),
                    "raw": dict(raw or {}),
                },
            )
            sequence, _, _ = mrml.add_volume_sequence(scene, items, name, AGE, unit, summary, sequencesLogic)
            return _kept(sequence)

        return Task(f"{modelId} age sweep", compute, apply, scene=scene)

    # ---- label templates (main thread, instant) ----------------------------------------------------
    def _schemaModel(self, model: str | None):
        """The card whose label schema templates follow: the label-to-image model's by default."""
        if model is not None:
            card = self.card(model)
        else:
            modelId = self.defaultModel(IMAGE_KIND) or self.defaultModel(LABELS_KIND)
            if modelId is None:
                raise errors.ModelNotFoundError(
                    "no label-to-image or label generator model is installed; import one in the Model section"
                )
            card = self.card(modelId)
        if not card.labels:
            raise errors.ConditionError(f"model {card.id} has no label schema")
        return card

    def templateFromNode(self, node, *, model: str | None = None, name: str | None = None):
        """A new schema segmentation (to paint on) from a label-map volume or a segmentation.

        Label-map values must follow the schema; segments are matched to classes by name. The
        input node is not modified.
        """
        _require(
            node,
            ("vtkMRMLLabelMapVolumeNode", "vtkMRMLSegmentationNode"),
            "select a segmentation or a label-map volume",
        )
        card = self._schemaModel(model)
        scene = self.scene
        name = name or f"SynthBrain template from {node.GetName()}"
        if node.IsA("vtkMRMLLabelMapVolumeNode"):
            return mrml.labelmap_to_segmentation(scene, node, card.labels, name)
        if node.IsA("vtkMRMLSegmentationNode"):
            return mrml.segmentation_to_schema(scene, node, card.labels, name)
        raise errors.ConditionError(
            f"{node.GetName()} is a {node.GetClassName()}; select a segmentation or a label-map volume"
        )

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
        _require(segmentationNode, "vtkMRMLSegmentationNode", "select a segmentation to paint")
        card = self._schemaModel(model)
        return mrml.label_volume(self.scene, segmentationNode, card.labels, f"{segmentationNode.GetName()} grid")

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

    def insertLesions(
        self,
        scanVolumeNode,
        segmentationNode,
        *,
        progress: ProgressCallback | None = None,
        cancel=None,
        background: bool = False,
        **kwargs: Any,
    ):
        """Insert the lesions painted in ``segmentationNode`` into a copy of ``scanVolumeNode``, e.g.
        ``insertLesions(scan, seg, sequence="FLAIR")``; returns ``(newVolume, lesionSegmentation)``.

        Keyword arguments: ``sequence`` (the scan's: T1 | FLAIR | T2), ``model``, ``margin`` (mm),
        ``seed``, ``device``, ``tissueNode``, ``tissueLabels`` (see :meth:`insertionTask`);
        ``progress``, ``cancel`` and ``background`` as for :meth:`generateBrain`.
        """
        return self._run(self.insertionTask(scanVolumeNode, segmentationNode, **kwargs), progress, cancel, background)

    def addLesionSegments(self, segmentationNode, *, model: str | None = None) -> list[str]:
        """Add the empty lesion segments (``wmh``, ``tumour``, ``edema``, ``gdtumour``, in the model's
        colours) that ``segmentationNode`` lacks, to paint on a scan; returns the names added."""
        _require(segmentationNode, "vtkMRMLSegmentationNode", "select a segmentation to paint lesions in")
        card = self._schemaModel(model)
        return mrml.add_empty_segments(segmentationNode, [c for c in card.labels if c.name in LESION_NAMES])

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
        self, model: str, *, progress: ProgressCallback | None = None, cancel=None, background: bool = False
    ):
        """Download a model's public weights (e.g. ``"brain-ldm"``), checked against the card's sha256."""
        return self._run(self.downloadTask(model), progress, cancel, background)


def measure_volumes(image: np.ndarray, affine: np.ndarray) -> dict[str, float]:
    """Ventricular and brain volume (mL) measured in a generated T1 by SynthBrainLib's image-based
    estimators (mask, bias correction, tissue classes; no model involved)."""
    from SynthBrainLib.outputs.measure import measure_t1

    measured = measure_t1(image, affine)
    return {
        "ventricular_volume": round(measured["ventricular_volume_ml"], 2),
        "brain_volume": round(measured["brain_volume_ml"], 2),
    }


def measuredVolumes(node) -> dict[str, float] | None:
    """The volumes measured in a generated brain (``measure=True``), or None."""
    text = node.GetAttribute(MEASURED_ATTRIBUTE) if node is not None else None
    return json.loads(text) if text else None


def _kept(node):
    """Results keep their synthetic mark and provenance when saved to a file (a JSON sidecar)."""
    if node is not None and hasattr(node, "AddDefaultStorageNode"):
        saving.keep_provenance_on_save(node)
    return node


def _description(result) -> str:
    text = str(result.provenance.get("description") or "")
    return text.replace("_", " ")


def _require(node, classes: str | tuple[str, ...], message: str) -> None:
    """A one-line error when ``node`` is missing or not one of the MRML ``classes``."""
    classes = (classes,) if isinstance(classes, str) else classes
    if node is None:
        raise errors.ConditionError(message)
    if not hasattr(node, "IsA") or not any(node.IsA(c) for c in classes):
        what = node.GetClassName() if hasattr(node, "GetClassName") else type(node).__name__
        name = node.GetName() if hasattr(node, "GetName") else repr(node)
        raise errors.ConditionError(f"{message} ({name} is a {what})")
