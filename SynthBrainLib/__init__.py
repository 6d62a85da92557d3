"""SynthBrainLib: synthesise brain MRI with published generative models (no Slicer, no Qt).

Quick start::

    import SynthBrainLib
    pipe = SynthBrainLib.load_pipeline("brain-ldm-demo")          # or "brain-ldm" once imported
    result = pipe.generate(age=70, sex="female", seed=1)          # SynthesisResult
    result.save("brain.nii.gz")                                   # + brain.json provenance

Layers (each imports only those below it): :mod:`.errors` -> :mod:`.outputs` (results, files) ->
:mod:`.models` (cards, the request check, store, weights) -> :mod:`.insertion` -> :mod:`.pipelines`
(one class per model kind, sampling) -> :mod:`.batch` -> :mod:`.cli`; docs/architecture.md. The
developer tools (benchmarks, training, evaluation, phantoms) are the separate synthbrain-dev
distribution (``devtools/``, package ``synthbrain_dev``), never imported by the library.

The names below are imported on first use (PEP 562), so ``import SynthBrainLib.errors`` or the card
reader (``SynthBrainLib.models.cards``) work without torch - which is how the Slicer module reports
errors before its dependencies are installed.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__
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

#: public name -> the module that defines it (imported when the name is first used)
_LAZY = {
    "load_pipeline": ".pipelines",
    "ConditionalBrainPipeline": ".pipelines",
    "LabelGeneratorPipeline": ".pipelines",
    "LabelToImagePipeline": ".pipelines",
    "ModalityImagePipeline": ".pipelines",
    "SynthesisPipeline": ".pipelines",
    "SynthesisResult": ".outputs.results",
    "ModelCard": ".models.cards",
    "load_card": ".models.cards",
    "builtin_cards": ".models.cards",
    "ModelStore": ".models.store",
    "read_volume": ".outputs.io",
    "write_volume": ".outputs.io",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "__version__",
    *_LAZY,
    "SynthBrainError",
    "CardError",
    "CheckpointError",
    "ConditionError",
    "DeviceError",
    "ModelNotFoundError",
    "OutputError",
    "SynthesisCancelled",
]
