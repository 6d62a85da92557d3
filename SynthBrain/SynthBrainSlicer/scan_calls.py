"""The logic's calls on a patient's own scan: lesions inserted or removed, the scan aged. A mixin of
:class:`~SynthBrainSlicer.logic.SynthBrainLogic` (its ``_settings`` and ``_run``), so a script finds
them on the logic; the tasks are built in :mod:`.image_tasks` and :mod:`.ageing_tasks`."""

from __future__ import annotations

from typing import Any

from . import ageing_tasks, image_tasks
from .settings import RunSettings
from .tasks import ProgressCallback, Task


class PatientScanCalls:
    """Tasks and console calls that work on a copy of a patient's scan (the scan is never modified)."""

    def insertionTask(self, scanVolumeNode, segmentationNode, settings: RunSettings | None = None, **keywords) -> Task:
        """Painted lesions inserted into a copy of a scan (:func:`~SynthBrainSlicer.image_tasks.insertion`):
        ``sequence``, ``margin``, ``tissueNode``, ``tissueLabels``, run settings."""
        settings, rest = self._settings(settings, keywords)
        return image_tasks.insertion(self, scanVolumeNode, segmentationNode, settings, **rest)

    def removalTask(self, scanVolumeNode, segmentationNode, settings: RunSettings | None = None, **keywords) -> Task:
        """Painted lesions removed from a copy of a scan (:func:`~SynthBrainSlicer.image_tasks.removal`):
        ``sequence``, ``margin``, ``tissueNode``, ``tissueLabels``, run settings."""
        settings, rest = self._settings(settings, keywords)
        return image_tasks.removal(self, scanVolumeNode, segmentationNode, settings, **rest)

    def ageingTask(self, scanVolumeNode, settings: RunSettings | None = None, **keywords) -> Task:
        """A patient's scan at another age (:func:`~SynthBrainSlicer.ageing_tasks.ageing`): ``age``,
        ``toAge``, ``sex``, run settings."""
        settings, rest = self._settings(settings, keywords)
        return ageing_tasks.ageing(self, scanVolumeNode, settings, **rest)

    def ageingSweepTask(self, scanVolumeNode, settings: RunSettings | None = None, **keywords) -> Task:
        """A patient's scan at several ages (:func:`~SynthBrainSlicer.ageing_tasks.ageing_sweep`):
        ``age``, ``ageTo``, ``count``, ``sex``, run settings."""
        settings, rest = self._settings(settings, keywords)
        return ageing_tasks.ageing_sweep(self, scanVolumeNode, settings, **rest)

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
        ``seed``, ``device``, ``tissueNode``, ``tissueLabels``, ``existingLesionsNode`` (the patient's
        own lesions, whose look inserted ones take), ``skullStripped`` (``"auto"``: a scan with skull and
        neck is brain-extracted for the registration only, the mask added as a segmentation; ``"yes"``,
        ``"no"``) (see :meth:`insertionTask`);
        ``progress``, ``cancel`` and ``background`` as for :meth:`generateBrain`.
        """
        return self._run(self.insertionTask(scanVolumeNode, segmentationNode, **kwargs), progress, cancel, background)

    def removeLesions(
        self,
        scanVolumeNode,
        segmentationNode,
        *,
        progress: ProgressCallback | None = None,
        cancel=None,
        background: bool = False,
        **kwargs: Any,
    ):
        """Remove the lesions painted in ``segmentationNode`` from a copy of ``scanVolumeNode``, e.g.
        ``removeLesions(scan, seg, sequence="T1")``; returns the new volume node. Keyword arguments:
        ``sequence``, ``model``, ``margin`` (mm), ``seed``, ``device``, ``tissueNode``, ``tissueLabels``,
        ``skullStripped`` (see :meth:`removalTask`); ``progress``, ``cancel`` and ``background`` as for
        :meth:`generateBrain`."""
        return self._run(self.removalTask(scanVolumeNode, segmentationNode, **kwargs), progress, cancel, background)

    def ageScan(
        self,
        scanVolumeNode,
        *,
        progress: ProgressCallback | None = None,
        cancel=None,
        background: bool = False,
        **kwargs: Any,
    ):
        """The patient's own scan as it would look at another age, e.g.
        ``ageScan(scan, age=55, sex="female", toAge=80, background=True)``; returns ``(aged volume,
        atrophy map)`` (the deformation's log-Jacobian: negative where tissue shrinks). The scan is not
        modified. Keyword arguments: ``age`` (the patient's, at the scan), ``toAge``, ``sex``,
        ``skullStripped`` (as for :meth:`insertLesions`), ``model``, ``seed``, ``steps``, ``device``,
        ``precision``; ``progress``, ``cancel`` and
        ``background`` as for :meth:`generateBrain`."""
        return self._run(self.ageingTask(scanVolumeNode, **kwargs), progress, cancel, background)

    def ageScanSweep(
        self,
        scanVolumeNode,
        *,
        progress: ProgressCallback | None = None,
        cancel=None,
        background: bool = False,
        **kwargs: Any,
    ):
        """The patient's own scan at ``count`` ages from ``age`` to ``ageTo``, as a sequence node with a
        browser to scrub through it, e.g. ``ageScanSweep(scan, age=55, ageTo=80, count=6)``. Keyword
        arguments as for :meth:`ageScan` (``ageTo`` and ``count`` instead of ``toAge``)."""
        return self._run(self.ageingSweepTask(scanVolumeNode, **kwargs), progress, cancel, background)
