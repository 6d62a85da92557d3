"""The panel's fixed choices as enums (Slicer's parameterNodeWrapper binds enums to combo boxes,
showing ``label()``). Plain Python, so the parameter node's types are tested without Slicer."""

from __future__ import annotations

import enum

from SynthBrainLib.models.samplers import SAMPLERS  # plain Python: loads before the dependencies
from SynthBrainLib.models.schema import BRAIN_KIND, IMAGE_KIND, LABELS_KIND, MODALITY_KIND

from .i18n import _

#: Model kinds (``card.kind``) the panel has a section for (SynthBrainLib's schema), and their names for the user.
KIND_NAMES = {
    BRAIN_KIND: _("conditioned brain"),
    LABELS_KIND: _("label generator"),
    IMAGE_KIND: _("label-to-image"),
    MODALITY_KIND: _("modality image"),
}
#: The condition an age sweep varies.
AGE = "age"
#: parameter-node field holding the model id of each kind
MODEL_FIELDS = {
    "brainModel": BRAIN_KIND,
    "labelModel": LABELS_KIND,
    "imageModel": IMAGE_KIND,
    "modalityModel": MODALITY_KIND,
}


class Device(enum.Enum):
    AUTO, CPU, GPU = "auto", "cpu", "cuda"

    def label(self) -> str:
        return {"auto": _("Auto (GPU if present)"), "cpu": _("CPU"), "cuda": _("GPU (CUDA)")}[self.value]


class Sex(enum.Enum):
    FEMALE, MALE = "female", "male"

    def label(self) -> str:
        return {"female": _("Female"), "male": _("Male")}[self.value]


class MRSequence(enum.Enum):
    T1, FLAIR, T2 = "T1", "FLAIR", "T2"

    def label(self) -> str:
        return self.value


class SkullStripped(enum.Enum):
    """Whether a patient's scan is brain only (SynthBrainLib's ``skull_stripped``): three states, so a
    combo box rather than a check box - "detect it" is the default and must stay expressible."""

    AUTO, YES, NO = "auto", "yes", "no"

    def label(self) -> str:
        return {
            "auto": _("Detect (extract the brain if the scan has a skull)"),
            "yes": _("Skull-stripped (brain only)"),
            "no": _("With skull (always extract the brain)"),
        }[self.value]


class _SamplerChoice(enum.Enum):
    """The panel's sampler choice: the card's default, or one of SynthBrainLib's samplers."""

    def label(self) -> str:
        return _("Model default") if self.value == "default" else SAMPLERS[self.value].label

    @property
    def samplerName(self) -> str | None:
        """What SynthBrainLib takes: None for the card's default sampler."""
        return None if self.value == "default" else self.value


#: One member per sampler of SynthBrainLib's registry (``DPMPP2M`` for ``dpm++2m``), plus DEFAULT.
Sampler = _SamplerChoice(
    "Sampler", [("DEFAULT", "default")] + [(n.upper().replace("+", "P"), n) for n in SAMPLERS], module=__name__
)


class Precision(enum.Enum):
    AUTO, FLOAT32, MIXED, BFLOAT16, FLOAT16 = "auto", "float32", "mixed", "bfloat16", "float16"

    def label(self) -> str:
        return _("Auto") if self is Precision.AUTO else self.value

    @property
    def precisionName(self) -> str | None:
        """What SynthBrainLib takes: None for the pipeline's default on the device."""
        return None if self is Precision.AUTO else self.value
