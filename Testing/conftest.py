"""Shared fixtures: an isolated model store and tiny model folders of every kind."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("OMP_NUM_THREADS", "2")

from tiny_models import (  # noqa: E402
    rflow_card,
    tiny_brain_card,
    tiny_labels_card,
    tiny_spade_card,
    tiny_spade_ldm_card,
    write_model_folder,
)


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A ModelStore in a temporary home with no shipped models (tests never touch ~/.cache)."""
    from SynthBrainLib.store import ModelStore

    home = tmp_path / "home"
    monkeypatch.setenv("SYNTHBRAIN_HOME", str(home))
    monkeypatch.setenv("SYNTHBRAIN_SHIPPED_MODELS", "")
    return ModelStore(home=home, shipped=[])


@pytest.fixture(scope="session")
def model_folders(tmp_path_factory):
    """Model folders (card.json + random weights) of every pipeline kind, built once per session."""
    base = tmp_path_factory.mktemp("models")
    return {
        "brain": write_model_folder(tiny_brain_card(), base / "tiny-brain-ldm"),
        "labels": write_model_folder(tiny_labels_card(), base / "tiny-labels"),
        "spade": write_model_folder(tiny_spade_card(), base / "tiny-spade"),
        "spade_ldm": write_model_folder(tiny_spade_ldm_card(), base / "tiny-spade-ldm"),
        "rflow": write_model_folder(rflow_card(), base / "tiny-rflow"),
    }
