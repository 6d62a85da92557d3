"""The rules of the panel's modality section (a ``modality_image`` model such as NV-Generate-MR-Brain),
without Qt: the card's modality names, size and spacing ranges, and the requests its buttons send.
Beside :mod:`.panel` (whose helpers it uses) to keep each room small."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from .i18n import _
from .panel import SIZE_BOUNDS, SPACING_BOUNDS, fill_combo, run_settings, select_data, selected_data

#: modality-pack fields -> spin box of each axis (x, y, z), for a modality-image model.
SIZE_FIELDS = {"sizeX": "modalitySizeXSpinBox", "sizeY": "modalitySizeYSpinBox", "sizeZ": "modalitySizeZSpinBox"}
SPACING_FIELDS = {
    "spacingX": "modalitySpacingXSpinBox",
    "spacingY": "modalitySpacingYSpinBox",
    "spacingZ": "modalitySpacingZSpinBox",
}
#: What a modality-image model's card decides in its section (disabled while no such card is chosen; its
#: buttons follow the panel's runs).
MODALITY_WIDGETS = (
    "modalitySelector",
    "modalitySkullStrippedCheckBox",
    *SIZE_FIELDS.values(),
    *SPACING_FIELDS.values(),
)


def apply_modality_card(ui, parameters, card, setDefaults: bool, choice: "ChoiceSelector") -> None:
    """The modality section for a modality-image model's card: its modality names in the selector,
    the size spin boxes in steps of the card's size multiple within its minimum and maximum, the
    spacing within its range; with ``setDefaults`` (or a modality the card lacks) the card's default
    request. ``choice``: the modality selector's :class:`ChoiceSelector`."""
    geometry, modalities = card.geometry, card.modalities

    def put(member: str, value) -> None:
        # A fresh pack each time: a pack read before a spin box clamped its value would write the
        # old value back (Slicer writes every member of the pack it is given).
        setattr(parameters.modality, member, value)

    for axis, (sizeField, spacingField) in enumerate(zip(SIZE_FIELDS, SPACING_FIELDS)):
        spin = getattr(ui, SIZE_FIELDS[sizeField])
        spin.singleStep = geometry.size_multiple
        spin.minimum = max(geometry.min_size[axis], SIZE_BOUNDS[0])
        spin.maximum = min(geometry.max_size[axis], SIZE_BOUNDS[1])
        spacing = getattr(ui, SPACING_FIELDS[spacingField])
        spacing.minimum = max(geometry.spacing_range[0], SPACING_BOUNDS[0])
        spacing.maximum = min(geometry.spacing_range[1], SPACING_BOUNDS[1])
        if setDefaults:
            put(sizeField, geometry.default_size[axis])
            put(spacingField, geometry.default_spacing[axis])
    if setDefaults or parameters.modality.modality not in modalities.names:
        put("modality", modalities.default.name)
        put("skullStripped", modalities.default.skull_stripped)
    choice.fill([(name, name) for name in modalities.names])
    ui.modalitySelector.toolTip = "\n".join(f"{m.key}: {m.label}" for m in modalities.choices)
    multiple, (lo, hi) = geometry.size_multiple, geometry.spacing_range
    for name in SIZE_FIELDS.values():
        getattr(ui, name).toolTip = _("Voxels along this axis: a multiple of {multiple}.").format(multiple=multiple)
    for name in SPACING_FIELDS.values():
        getattr(ui, name).toolTip = _("Voxel size along this axis, {lo:g}-{hi:g} mm.").format(lo=lo, hi=hi)


def modality_request(parameters) -> dict[str, Any]:
    """Keyword arguments of ``logic.modalityTask`` for the modality section (its own seed; the
    model's sampler and steps)."""
    pack = parameters.modality
    return dict(
        settings=run_settings(parameters, parameters.modalityModel, pack.seed, sampling=False),
        modality=pack.modality or None,
        skullStripped=pack.skullStripped,
        size=tuple(getattr(pack, f) for f in SIZE_FIELDS),
        spacing=tuple(getattr(pack, f) for f in SPACING_FIELDS),
    )


def modality_choice(parameters) -> dict[str, Any]:
    """The modality the section shows, as the comparison pins it: ``{"modality", "skullStripped"}``."""
    pack = parameters.modality
    return {"modality": pack.modality or None, "skullStripped": pack.skullStripped}


def modality_compare_request(pinned: dict, parameters) -> dict[str, Any]:
    """Keyword arguments of ``logic.modalityComparisonTask``: the pinned modality as A, the current one
    as B, one seed and grid."""
    request = modality_request(parameters)
    del request["modality"], request["skullStripped"]
    return dict(modalityA=pinned, modalityB=modality_choice(parameters), **request)


def describe_modality(choice: Mapping[str, Any]) -> str:
    """'FLAIR skull-stripped' or 'T1w whole head'."""
    stripped = _("skull-stripped") if choice.get("skullStripped") else _("whole head")
    return f"{choice.get('modality') or _('default modality')} {stripped}"


class ChoiceSelector:
    """A combo box whose items a model card gives at run time (a modality-image model's modality
    names), kept in step with a ``str`` pack member such as ``modality.modality``: not bound by
    connectGui, for the reason :class:`~SynthBrainSlicer.panel.ModelSelectors` gives. A value the card
    lacks stays shown, as "(not in this model)"."""

    def __init__(self, combo, path: str) -> None:
        self.combo = combo
        self.pack, _dot, self.member = path.partition(".")
        self._parameters = None
        self._slot = None

    def value(self) -> str:
        return getattr(getattr(self._parameters, self.pack), self.member) if self._parameters is not None else ""

    def connect(self, parameters) -> None:
        self.disconnect()
        self._parameters = parameters

        def slot(index):
            if self._parameters is not None and self.value() != selected_data(self.combo):
                setattr(getattr(self._parameters, self.pack), self.member, selected_data(self.combo))

        self.combo.currentIndexChanged.connect(slot)
        self._slot = slot
        self.update()

    def disconnect(self) -> None:
        if self._slot is not None:
            self.combo.currentIndexChanged.disconnect(self._slot)
        self._slot = self._parameters = None

    def fill(self, items: Iterable[tuple[str, Any]]) -> None:
        """The card's (text, value) items; the field's value selected."""
        fill_combo(self.combo, items, self.value(), _("{model} (not in this model)"))

    def update(self) -> None:
        """Select the field's value (without echoing back)."""
        if self._parameters is None:
            return
        wasBlocked = self.combo.blockSignals(True)
        try:
            select_data(self.combo, self.value(), _("{model} (not in this model)"))
        finally:
            self.combo.blockSignals(wasBlocked)
