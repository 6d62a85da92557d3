"""Building a card's MONAI networks and loading their weights."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Mapping

import torch

from ..errors import CardError
from .cards import NETWORK_CLASSES, ModelCard, NetworkSpec
from .checkpoints import load_weights, read_state_dict
from .network_arguments import monai_network_class, network_class_path


def build_network(spec: NetworkSpec, card_id: str = "?") -> torch.nn.Module:
    """Instantiate ``monai.networks.nets.<spec.cls>(**spec.kwargs)`` in eval mode (random weights)."""
    if spec.cls not in NETWORK_CLASSES:  # cards are validated; this guards hand-made specs
        raise CardError(
            f"card {card_id}: field 'networks.{spec.name}.class' must be one of {', '.join(NETWORK_CLASSES)}"
        )
    try:
        # A deep copy: some MONAI constructors (SPADENet) modify list arguments in place.
        net = monai_network_class(spec.cls)(**copy.deepcopy(dict(spec.kwargs)))
    except Exception as exc:  # MONAI constructors raise many types for arguments they cannot use
        raise CardError(
            f"card {card_id}: field 'networks.{spec.name}.kwargs' is rejected by {network_class_path(spec.cls)}: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    return net.eval()


def build_networks(card: ModelCard) -> dict[str, torch.nn.Module]:
    """All networks of a card, with random weights."""
    return {name: build_network(spec, card.id) for name, spec in card.networks.items()}


def load_networks(
    card: ModelCard, weight_paths: Mapping[str, Path]
) -> tuple[dict[str, torch.nn.Module], dict[str, str]]:
    """Build the card's networks and load each one's checkpoint strictly.

    Args:
        card: the model card.
        weight_paths: local file of each weight key (checksums are verified by the model store).

    Returns:
        The networks by name, and the key layout each checkpoint was in (``monai`` or ``generative``).
    """
    networks = build_networks(card)
    layouts: dict[str, str] = {}
    for name, spec in card.networks.items():
        if spec.weights is None:
            continue
        weight = card.weights[spec.weights]
        path = weight_paths[spec.weights]
        state = read_state_dict(path)
        layouts[name] = load_weights(
            networks[name], state, weight.format, name=f"{card.id} {spec.weights} checkpoint ({Path(path).name})"
        )
    return networks, layouts
