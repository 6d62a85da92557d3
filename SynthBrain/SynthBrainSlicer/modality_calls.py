"""The logic's calls for a model that makes an MR image of a chosen modality on a chosen grid
(``modality_image``, e.g. NV-Generate-MR-Brain). A mixin of
:class:`~SynthBrainSlicer.logic.SynthBrainLogic` (its ``_settings`` and ``_run``), so a script finds
them on the logic; the tasks are built in :mod:`.modality_tasks`."""

from __future__ import annotations

from typing import Any, Sequence

from . import modality_tasks
from .settings import RunSettings
from .tasks import ProgressCallback, Task


class ModalityCalls:
    """Tasks and console calls of the modality-image models."""

    def modalityTask(self, settings: RunSettings | None = None, **keywords: Any) -> Task:
        """One MR image (:func:`~SynthBrainSlicer.modality_tasks.modality_image`): ``modality``,
        ``skullStripped``, ``size``, ``spacing``, ``guidance``, run settings."""
        settings, rest = self._settings(settings, keywords)
        return modality_tasks.modality_image(self, settings, **rest)

    def modalityComparisonTask(self, modalityA, modalityB, settings: RunSettings | None = None, **keywords) -> Task:
        """Two modalities from one seed on one grid (:func:`~SynthBrainSlicer.modality_tasks.modality_comparison`):
        ``skullStripped``, ``size``, ``spacing``, ``guidance``, run settings."""
        settings, rest = self._settings(settings, keywords)
        return modality_tasks.modality_comparison(self, modalityA, modalityB, settings, **rest)

    def generateModalityImage(
        self,
        *,
        model: str | None = None,
        modality: str | None = None,
        skullStripped: bool | None = None,
        size: Sequence[int] | None = None,
        spacing: Sequence[float] | None = None,
        seed: int | None = None,
        sampler: str | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        device: str | None = None,
        precision: str | None = None,
        preview: bool = False,
        progress: ProgressCallback | None = None,
        cancel=None,
        background: bool = False,
    ):
        """A synthetic MR volume node of a chosen modality on a chosen grid, e.g.
        ``generateModalityImage(modality="FLAIR", skullStripped=True, size=(256, 256, 128), seed=1)``.

        Keyword arguments (``None``: the model card's default): ``model`` (an installed modality-image
        model, e.g. ``nv-generate-mr-brain``), ``modality`` (``T1w`` | ``T2w`` | ``FLAIR`` | ``SWI`` |
        ``MRA`` as the card lists them, any case), ``skullStripped`` (brain only, or the whole head),
        ``size`` (voxels x, y, z: multiples of 32 within the card's limits), ``spacing`` (mm x, y, z,
        within the card's range), ``seed``, ``sampler``, ``steps``, ``guidance`` (the card's range),
        ``device``, ``precision``, ``preview``; ``progress``, ``cancel`` and ``background`` as for
        :meth:`generateBrain`. A request the card does not allow is refused in one line before any
        work starts.
        """
        settings = RunSettings(
            model=model, seed=seed, sampler=sampler, steps=steps, device=device, precision=precision, preview=preview
        )
        task = self.modalityTask(
            settings, modality=modality, skullStripped=skullStripped, size=size, spacing=spacing, guidance=guidance
        )
        return self._run(task, progress, cancel, background)

    def compareModalities(
        self,
        modalityA,
        modalityB,
        *,
        progress: ProgressCallback | None = None,
        cancel=None,
        background: bool = False,
        **kwargs: Any,
    ):
        """Two modalities of the same synthetic head (same seed, same grid): ``(volumeA, volumeB)``.

        E.g. ``compareModalities("T1w", "FLAIR", skullStripped=True, seed=3)``; ``modalityA`` or
        ``modalityB`` may also be ``{"modality": "FLAIR", "skullStripped": False}``. Keyword arguments
        as for :meth:`generateModalityImage` (``skullStripped``, ``size``, ``spacing``, ``model``,
        ``seed``, ``steps``, ``guidance``, ...).
        """
        task = self.modalityComparisonTask(modalityA, modalityB, **kwargs)
        return self._run(task, progress, cancel, background)
