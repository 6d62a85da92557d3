"""The panel's parameter node: Slicer's ``parameterNodeWrapper`` with one ``parameterPack`` per
section, so that the widget, the panel rules and a saved scene share one typed description.

Widgets bind by their ``SlicerParameterName`` (``conditions.age``, ``run.seed``, ...) in the .ui
file. The model selectors and the modality selector, whose items come from the cards at run time,
are not bound (see :class:`~SynthBrainSlicer.panel.ModelSelectors` and
:class:`~SynthBrainSlicer.modality_panel.ChoiceSelector`).
"""

from __future__ import annotations

from typing import Annotated, Optional, Union

import slicer
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper, parameterPack

from .choices import Device, MRSequence, Precision, Sampler, Sex, SkullStripped
from .panel import AGE_BOUNDS, FRACTION_BOUNDS, SIZE_BOUNDS, SPACING_BOUNDS, VOLUME_BOUNDS

MAX_SEED = 2**31 - 1  # a QSpinBox holds a C int


@parameterPack
class BrainConditions:
    """A conditioned brain's request (slider ranges and defaults come from the chosen model's card)."""

    age: Annotated[float, WithinRange(*AGE_BOUNDS)] = 65.0
    sex: Sex = Sex.FEMALE
    ventricularVolume: Annotated[float, WithinRange(*VOLUME_BOUNDS)] = 20.0
    brainVolume: Annotated[float, WithinRange(*VOLUME_BOUNDS)] = 1300.0
    rawValues: bool = False
    measureVolumes: bool = True


@parameterPack
class RunOptions:
    """How every run of the panel is made (SynthBrainSlicer.logic.RunSettings is built from these)."""

    device: Device = Device.AUTO
    seed: Annotated[int, WithinRange(0, MAX_SEED)] = 1
    sampler: Sampler = Sampler.DEFAULT
    steps: Annotated[int, WithinRange(1, 10000)] = 50
    preview: bool = False
    published: bool = False
    guidance: Annotated[float, WithinRange(0.0, 10.0)] = 0.0  # 0: the model's default scale
    precision: Precision = Precision.AUTO


@parameterPack
class AgeSweep:
    ageFrom: Annotated[float, WithinRange(*AGE_BOUNDS)] = 50.0
    ageTo: Annotated[float, WithinRange(*AGE_BOUNDS)] = 80.0
    steps: Annotated[int, WithinRange(2, 200)] = 7
    typicalVolumes: bool = True


@parameterPack
class ScanAgeing:
    """A patient's own scan at another age (one target, or a sweep of ``count`` ages up to it)."""

    scan: Optional[slicer.vtkMRMLScalarVolumeNode]
    age: Annotated[float, WithinRange(*AGE_BOUNDS)] = 60.0
    sex: Sex = Sex.FEMALE
    toAge: Annotated[float, WithinRange(*AGE_BOUNDS)] = 80.0
    count: Annotated[int, WithinRange(2, 50)] = 5
    skullStripped: SkullStripped = SkullStripped.AUTO


@parameterPack
class LesionPainting:
    """Label generation, painting on a template or a scan, and lesion insertion."""

    wmh: Annotated[float, WithinRange(*FRACTION_BOUNDS)] = 0.0
    tumour: Annotated[float, WithinRange(*FRACTION_BOUNDS)] = 0.0
    edema: Annotated[float, WithinRange(*FRACTION_BOUNDS)] = 0.0
    gdtumour: Annotated[float, WithinRange(*FRACTION_BOUNDS)] = 0.0
    seed: Annotated[int, WithinRange(0, MAX_SEED)] = 1
    templateInput: Optional[Union[slicer.vtkMRMLSegmentationNode, slicer.vtkMRMLLabelMapVolumeNode]]
    segmentation: Optional[slicer.vtkMRMLSegmentationNode]
    reference: Optional[slicer.vtkMRMLScalarVolumeNode]
    margin: Annotated[float, WithinRange(0.0, 20.0)] = 3.0
    sequence: MRSequence = MRSequence.T1
    existingLesions: Optional[Union[slicer.vtkMRMLSegmentationNode, slicer.vtkMRMLLabelMapVolumeNode]]
    skullStripped: SkullStripped = SkullStripped.AUTO


@parameterPack
class ModalityImage:
    """An MR image of a chosen modality on a chosen grid (a ``modality_image`` model; the spin boxes'
    ranges and steps, the modality names and the defaults come from the chosen model's card)."""

    # Synced by panel.ChoiceSelector (the card's modality names are known at run time only).
    modality: str = ""
    skullStripped: bool = False
    sizeX: Annotated[int, WithinRange(*SIZE_BOUNDS)] = 256
    sizeY: Annotated[int, WithinRange(*SIZE_BOUNDS)] = 256
    sizeZ: Annotated[int, WithinRange(*SIZE_BOUNDS)] = 128
    spacingX: Annotated[float, WithinRange(*SPACING_BOUNDS)] = 0.94
    spacingY: Annotated[float, WithinRange(*SPACING_BOUNDS)] = 0.94
    spacingZ: Annotated[float, WithinRange(*SPACING_BOUNDS)] = 1.36
    seed: Annotated[int, WithinRange(0, MAX_SEED)] = 1


@parameterNodeWrapper
class SynthBrainParameterNode:
    # Model ids, synced by panel.ModelSelectors: connectGui cannot bind a combo box to a str
    # without a fixed Choice list, and the installed models change at run time.
    brainModel: str = ""
    labelModel: str = ""
    imageModel: str = ""
    modalityModel: str = ""
    conditions: BrainConditions
    run: RunOptions
    sweep: AgeSweep
    ageing: ScanAgeing
    painting: LesionPainting
    modality: ModalityImage
