"""SynthBrainLib: synthesise brain MRI with published generative models (no Slicer, no Qt).

Quick start::

    import SynthBrainLib
    pipe = SynthBrainLib.load_pipeline("brain-ldm-demo")          # or "brain-ldm" once imported
    result = pipe.generate(age=70, sex="female", seed=1)          # SynthesisResult
    result.save("brain.nii.gz")                                   # + brain.json provenance

See README.md for the label generator, label-to-image synthesis and the model store.
"""

from ._version import __version__
from .cards import ModelCard, builtin_cards, load_card
from .errors import (
    CardError,
    CheckpointError,
    ConditionError,
    DeviceError,
    ModelNotFoundError,
    OutputError,
    SynthBrainError,
    SynthesisCancelled,
)
from .io import read_volume, write_volume
from .pipelines import (
    ConditionalBrainPipeline,
    LabelGeneratorPipeline,
    LabelToImagePipeline,
    SynthesisPipeline,
    load_pipeline,
)
from .results import SynthesisResult
from .store import ModelStore

__all__ = [
    "__version__",
    "load_pipeline",
    "ConditionalBrainPipeline",
    "LabelGeneratorPipeline",
    "LabelToImagePipeline",
    "SynthesisPipeline",
    "SynthesisResult",
    "ModelCard",
    "ModelStore",
    "load_card",
    "builtin_cards",
    "read_volume",
    "write_volume",
    "SynthBrainError",
    "CardError",
    "CheckpointError",
    "ConditionError",
    "DeviceError",
    "ModelNotFoundError",
    "OutputError",
    "SynthesisCancelled",
]
