"""A trained demo written as a model folder: weights stored in float16 (and what that costs,
measured), ``card.json`` with every weight file's sha256, and ``training.json``; all files staged and
renamed into place together."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from SynthBrainLib.errors import OutputError
from SynthBrainLib.models.cards import ModelCard
from SynthBrainLib.models.networks import build_network
from SynthBrainLib.outputs.atomic_files import temporary_sibling
from SynthBrainLib.outputs.digests import file_sha256
from SynthBrainLib.pipelines import pipeline_class

from .data import PhantomTrainingData

#: (the three demos stay under 40 MB) at a cost that train_demo measures and records (storage_check).
STORAGE_DTYPE = torch.float16


def _stored(states: dict[str, dict[str, torch.Tensor]], dtype: torch.dtype) -> dict[str, dict[str, torch.Tensor]]:
    """Floating-point tensors in the storage ``dtype``; integer ones (label maps) as they are."""
    return {
        key: {k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()).contiguous() for k, v in state.items()}
        for key, state in states.items()
    }


def storage_check(
    card: dict,
    states: dict[str, dict[str, torch.Tensor]],
    data: PhantomTrainingData,
    dtype: torch.dtype = STORAGE_DTYPE,
) -> dict[str, Any]:
    """Output difference between float32 weights and weights rounded to ``dtype`` (same seeds).

    Images: max abs difference and PSNR (data range 1); label maps: voxels whose argmax changes.
    """

    model_card = ModelCard.from_dict(json.loads(json.dumps(card)))
    outputs = []
    for variant in (states, _stored(states, dtype)):
        networks = {}
        for name, spec in model_card.networks.items():
            net = build_network(spec, model_card.id)
            net.load_state_dict({k: v.float() for k, v in variant[spec.weights].items()})
            networks[name] = net
        tensors = {
            k: {n: (t.float() if t.is_floating_point() else t) for n, t in variant[k].items()}
            for k in variant
            if k not in {s.weights for s in model_card.networks.values()}
        }
        pipe = pipeline_class(model_card)(model_card, networks, device="cpu", tensors=tensors)
        if pipe.input_name == "labels":  # the model renders a label map: a real phantom's
            labels = data.partial_volumes[0].astype(np.float32).argmax(0)
            results = [
                pipe.generate(labels, affine=data.affine, sequence=seq, seed=0) for seq in model_card.sequences.names
            ]
        else:
            results = [pipe.generate(seed=seed, steps=10) for seed in range(2)]
        outputs.append(results)
    record: dict[str, Any] = {"dtype": str(dtype).replace("torch.", ""), "compared_outputs": len(outputs[0])}
    if pipe.output_type == "labels":
        changed = [float(np.mean(a.labels != b.labels)) for a, b in zip(*outputs)]
        record["label_voxels_changed_fraction"] = max(changed)
    else:
        diff = [float(np.abs(a.image - b.image).max()) for a, b in zip(*outputs)]
        mse = [float(np.mean((a.image - b.image) ** 2)) for a, b in zip(*outputs)]
        record["max_abs_difference"] = max(diff)
        record["psnr_db"] = min(10 * np.log10(1.0 / max(m, 1e-20)) for m in mse)
    return record


def write_model_folder(
    out: Path,
    card: dict,
    states: dict[str, dict[str, torch.Tensor]],
    training: dict,
    overwrite: bool = False,
    dtype: torch.dtype = STORAGE_DTYPE,
) -> ModelCard:
    """Write weights (safetensors in ``dtype``), card.json with their sha256, and training.json;
    atomically per file. The card is validated before anything is written.
    """
    from safetensors.torch import save_file

    out = Path(out)
    if (out / "card.json").exists() and not overwrite:
        raise OutputError(f"{out / 'card.json'} already exists; pass --overwrite to replace the model")
    out.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[Path, Path]] = []
    try:
        for key, state in states.items():
            tmp = temporary_sibling(out / card["weights"][key]["file"], suffix=".safetensors")
            # One metadata key only: safetensors writes its metadata map in hash order, which
            # changes between processes, so two keys made the same weights hash differently
            # (and a reused autoencoder look like a new one).
            metadata = {
                "synthbrain": json.dumps(
                    {"model": card["id"], "training_data": "synthetic MNI152 phantoms"}, sort_keys=True
                )
            }
            save_file(_stored({key: state}, dtype)[key], tmp, metadata=metadata)
            card["weights"][key]["sha256"] = file_sha256(tmp)
            card["weights"][key]["size_bytes"] = Path(tmp).stat().st_size
            staged.append((Path(tmp), out / card["weights"][key]["file"]))
        model_card = ModelCard.from_dict(card)
        for name, payload in (("card.json", card), ("training.json", training)):
            tmp = temporary_sibling(out / name, suffix=".json")
            tmp.write_text(json.dumps(payload, indent=2), encoding="utf-8")
            staged.append((Path(tmp), out / name))
        for tmp, dest in staged:
            os.replace(tmp, dest)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
    return model_card
