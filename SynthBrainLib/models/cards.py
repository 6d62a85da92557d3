"""Model cards: one JSON file that fully describes a generative model.

A card names the MONAI networks (class from :mod:`monai.networks.nets` and constructor kwargs), the
noise schedule and the default sampler, the latent shape and scale factor, the conditioning variables
(real-world unit and range, and how they map to the model's input), the output geometry, the label
schema, the weight files with their checksums, and the licence and citation.

Cards are validated when loaded: a malformed card raises :class:`~SynthBrainLib.errors.CardError`
naming the card and the field, e.g. ``card brain-ldm: field 'output.spacing' must be 3 positive
numbers, got [1, 1]``. Nothing in a card is executed: network classes are looked up in a fixed
allow-list and kwargs are checked against the class signature.

A card's parts are in :mod:`.card_parts`, the readers of its sections in :mod:`.card_sections`, and
the check of its network arguments against MONAI (which imports MONAI) in :mod:`.network_arguments`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..errors import CardError
from .card_fields import FieldReader, shown
from .card_parts import (  # noqa: F401 - the parts of a card, imported from here by their users
    Conditioning,
    ConditionVariable,
    Guidance,
    LabelClass,
    Latent,
    NetworkSpec,
    OutputGeometry,
    Sampling,
    Scheduler,
    Sequences,
    Template,
    WeightFile,
)
from .card_sections import (  # noqa: F401 - NETWORK_CLASSES: the allow-list, imported from here
    NETWORK_CLASSES,
    parse_conditioning,
    parse_labels,
    parse_latent,
    parse_networks,
    parse_output,
    parse_sampling,
    parse_scheduler,
    parse_sequences,
    parse_template,
    parse_weights,
)
from .modalities import Geometry, Modalities, parse_geometry, parse_modalities
from .network_arguments import check_network_arguments  # noqa: F401 - run by the pipelines and the store

CARD_SCHEMA_VERSION = 1

_ID = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
#: A card's ``kind`` names the pipeline class that runs it; the rules that depend on the kind (which
#: sections and networks it needs) are that class's ``check_card`` (SynthBrainLib.pipelines), so the
#: reader stays torch-free and a new kind is one pipeline class.
_KIND = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class ModelCard:
    """A validated model card. Build with :func:`load_card` or :meth:`from_dict`."""

    id: str
    name: str
    version: str
    kind: str
    description: str
    licence: str
    citation: str
    intended_use: str
    source: Mapping[str, Any]
    networks: Mapping[str, NetworkSpec]
    weights: Mapping[str, WeightFile]
    scheduler: Scheduler | None
    sampling: Sampling | None
    latent: Latent | None
    conditioning: Conditioning
    output: OutputGeometry
    labels: tuple[LabelClass, ...] | None
    sequences: Sequences | None
    template: Template | None
    weights_public: bool
    data: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)
    path: Path | None = field(default=None, compare=False)
    #: The modalities and output grids of a ``modality_image`` model (:mod:`.modalities`).
    modalities: Modalities | None = None
    geometry: Geometry | None = None

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: Path | None = None) -> "ModelCard":
        card_id = data.get("id") if isinstance(data, dict) and isinstance(data.get("id"), str) else "<unnamed>"
        f = FieldReader(data, "", card_id)
        version = f.integer("schema_version")
        if version != CARD_SCHEMA_VERSION:
            f.fail("schema_version", f"must be {CARD_SCHEMA_VERSION}, got {version}")
        model_id = f.str("id")
        if not _ID.match(model_id):
            f.fail("id", f"must be lower-case letters, digits, '.', '_' or '-', got {shown(model_id)}")
        kind = f.str("kind")
        if not _KIND.match(kind):
            f.fail("kind", f"must be a pipeline kind name (lower-case letters and '_'), got {shown(kind)}")

        weights = parse_weights(f)
        networks = parse_networks(f, weights)
        scheduler = parse_scheduler(f) if f.has("scheduler") else None
        conditioning = parse_conditioning(f)
        sampling = parse_sampling(f, scheduler, conditioning) if f.has("sampling") else None
        latent = parse_latent(f) if f.has("latent") else None
        output = parse_output(f)
        labels = parse_labels(f) if f.has("labels") else None
        sequences = parse_sequences(f, weights) if f.has("sequences") else None
        template = parse_template(f, weights) if f.has("template") else None

        card = cls(
            id=model_id,
            name=f.str("name"),
            version=f.str("version"),
            kind=kind,
            description=f.str("description"),
            licence=f.str("licence"),
            citation=f.str("citation"),
            intended_use=f.str("intended_use"),
            source=f.mapping("source"),
            networks=networks,
            weights=weights,
            scheduler=scheduler,
            sampling=sampling,
            latent=latent,
            conditioning=conditioning,
            output=output,
            labels=labels,
            sequences=sequences,
            template=template,
            weights_public=f.boolean("weights_public"),
            data=json.loads(json.dumps(data)),
            path=path,
            modalities=parse_modalities(model_id, data) if f.has("modalities") else None,
            geometry=parse_geometry(model_id, data) if f.has("geometry") else None,
        )
        return card

    # ---- helpers -----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The card as JSON data (what was loaded)."""
        return json.loads(json.dumps(self.data))

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.labels) if self.labels else ()


def card_field_error(card: ModelCard, field: str, message: str) -> CardError:
    """The error of a card rule checked outside the reader (e.g. a pipeline's kind rules), worded as
    the reader's own: ``card <id>: field '<field>' <message>``."""
    return CardError(f"card {card.id}: field '{field}' {message}")


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------
def load_card(path: str | Path) -> ModelCard:
    """Read and validate a card JSON file."""
    if not isinstance(path, (str, Path)) or not str(path):
        raise CardError(f"card {path!r} is not a file path")
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CardError(f"cannot read card {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise CardError(f"card {path} is not UTF-8 text (byte {exc.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CardError(f"card {path} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
    except RecursionError:
        raise CardError(f"card {path} is not valid JSON for a card: nested too deeply") from None
    return ModelCard.from_dict(data, path=path)


BUILTIN_CARD_DIR = Path(__file__).with_name("cards")


def builtin_cards() -> dict[str, ModelCard]:
    """Cards of the published models that ship with the package, by id."""
    cards = {}
    for p in sorted(BUILTIN_CARD_DIR.glob("*.json")):
        card = load_card(p)
        cards[card.id] = card
    return cards
