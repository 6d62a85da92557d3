"""Acceptance check of the core issue with the FULL-SIZE Brain LDM (not run in CI: ~13 GB RAM, minutes).

1. Builds a folder laid out like the MONAI model-zoo bundle brain_image_synthesis_latent_diffusion_model,
   with random weights saved by the old GenerativeModels package (monai-generative 0.2.3), as the
   published checkpoints were.
2. `synthbrain models import <bundle> --allow-unverified` (random weights cannot match the published md5).
3. `synthbrain generate --model brain-ldm --steps 2 --device cpu -o out.nii.gz` and checks the NIfTI:
   160x224x160, 1 mm, SYNTHETIC in the header, provenance JSON beside it.

Usage: python Testing/acceptance/full_size_brain_ldm.py WORKDIR
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(work: Path) -> None:
    from tiny_models import write_old_format_bundle

    from SynthBrainLib.models.cards import builtin_cards

    work.mkdir(parents=True, exist_ok=True)
    bundle = work / "brain_image_synthesis_latent_diffusion_model"
    t = time.time()
    if not (bundle / "models" / "model.pt").exists():
        write_old_format_bundle(builtin_cards()["brain-ldm"].to_dict(), bundle)
    print(
        f"bundle written in {time.time() - t:.0f} s: "
        f"{sorted(str(p.relative_to(bundle)) for p in bundle.rglob('*') if p.is_file())}"
    )
    env = dict(os.environ, SYNTHBRAIN_HOME=str(work / "home"))
    exe = [sys.executable, "-m", "SynthBrainLib.cli"]
    for argv in (
        ["models", "import", str(bundle), "--allow-unverified"],
        [
            "generate",
            "--model",
            "brain-ldm",
            "--steps",
            "2",
            "--device",
            "cpu",
            "--seed",
            "0",
            "-o",
            str(work / "out.nii.gz"),
            "--overwrite",
        ],
    ):
        t = time.time()
        res = subprocess.run(["/usr/bin/time", "-v", *exe, *argv], env=env, capture_output=True, text=True)
        peak = [line for line in res.stderr.splitlines() if "Maximum resident" in line]
        print(
            f"$ synthbrain {' '.join(argv)}\n{res.stdout.strip()}\n  exit {res.returncode}, "
            f"{time.time() - t:.0f} s, {peak[0].strip() if peak else ''}"
        )
        if res.returncode != 0:
            print(res.stderr[-3000:])
            sys.exit(1)
    import nibabel as nib

    img = nib.load(str(work / "out.nii.gz"))
    prov = json.loads((work / "out.json").read_text())
    print("shape", img.shape, "zooms", img.header.get_zooms(), "descrip", img.header["descrip"].tobytes().decode())
    print(
        "provenance:",
        {k: prov[k] for k in ("synthetic", "seed", "sampler", "steps")},
        "layout",
        prov["weights"]["diffusion"]["layout"],
    )
    assert img.shape == (160, 224, 160) and tuple(img.header.get_zooms()) == (1.0, 1.0, 1.0)
    assert img.header["descrip"].tobytes().decode().startswith("SYNTHETIC")
    assert prov["synthetic"] is True and prov["steps"] == 2
    print("ACCEPTANCE OK")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/synthbrain-acceptance"))
