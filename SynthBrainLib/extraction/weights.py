"""deepbet's weights: fetched once from its MIT-licensed wheel on PyPI, checked, and kept as safetensors.

The wheel (``deepbet 1.0.2``) carries the two networks as TorchScript files. They are read with
:func:`~SynthBrainLib.extraction.torchscript_tensors.read_tensors` (no stored code runs) and saved in
the cache as one safetensors file, ``$SYNTHBRAIN_HOME/extraction/deepbet-1.0.2.safetensors``, with the
two networks' tensors under ``bbox.`` and ``brain.``. After that the extractor works offline.
"""

from __future__ import annotations

import os
import zipfile
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..errors import CheckpointError
from ..models.download import download_file
from ..outputs.atomic_files import temporary_sibling
from ..outputs.digests import file_sha256
from .torchscript_tensors import read_tensors


@dataclass(frozen=True)
class ExtractorRelease:
    """Where one release of the extractor's weights comes from."""

    name: str
    version: str
    url: str
    sha256: str
    members: dict  # network -> file inside the wheel
    licence: str
    citation: str

    @property
    def file_name(self) -> str:
        return f"{self.name}-{self.version}.safetensors"


DEEPBET = ExtractorRelease(
    name="deepbet",
    version="1.0.2",
    url=(
        "https://files.pythonhosted.org/packages/00/48/3550a510d020faf4d67e86c9f4d3154923d4f4965b6fa9651b5c51012094/"
        "deepbet-1.0.2-py3-none-any.whl"
    ),
    # the wheel's sha256 as PyPI publishes it (https://pypi.org/simple/deepbet/)
    sha256="1999e2ea00ec48f6233b95b96f3901a962d3f70431c63aeb985e8a49a198473c",
    members={"bbox": "data/models/bbox_model.pt", "brain": "data/models/model.pt"},
    licence="MIT (Medical Machine Learning Lab, University of Münster)",
    citation=(
        "Fisch L. et al., deepbet: Fast brain extraction of T1-weighted MRI using Convolutional Neural "
        "Networks, Computers in Biology and Medicine 2024, doi:10.1016/j.compbiomed.2024.108845"
    ),
)


#: The model store's home the extractor's weights live under, when a caller chose one (the CLI's --home).
_HOME: ContextVar[Path | None] = ContextVar("synthbrain_extraction_home", default=None)


@contextmanager
def weights_home(home: str | Path | None):
    """Within the block, the extractor's weights live under ``home``/extraction (None: no change)."""
    token = _HOME.set(Path(home).expanduser() if home is not None else _HOME.get())
    try:
        yield
    finally:
        _HOME.reset(token)


def weights_dir(home: Path | None = None) -> Path:
    """``home``/extraction, by default under the model store's home (``$SYNTHBRAIN_HOME``)."""
    from ..models.store_reading import default_home

    chosen = home if home is not None else _HOME.get()
    return (Path(chosen) if chosen is not None else default_home()) / "extraction"


def weights_path(release: ExtractorRelease = DEEPBET, home: Path | None = None) -> Path:
    return weights_dir(home) / release.file_name


def install_weights(
    release: ExtractorRelease = DEEPBET,
    *,
    home: Path | None = None,
    wheel: str | Path | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Make the extractor's safetensors file in the cache (download the wheel unless ``wheel`` is given).

    Args:
        wheel: a copy of the release's wheel the user already has (checked against its sha256).

    Raises:
        CheckpointError: no network (one line, with what to do), a wheel with another checksum, or
            contents that are not the expected networks.
    """
    dest = weights_path(release, home)
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    if wheel is None:
        wheel = dest.parent / Path(release.url).name
        if not wheel.exists():
            try:
                download_file(release.url, wheel, sha256=release.sha256, progress=progress)
            except CheckpointError as exc:
                raise CheckpointError(
                    f"the brain-extraction weights ({release.name} {release.version}) are not in {dest.parent} and "
                    f"could not be fetched ({exc.message}); fetch them once online with "
                    "`synthbrain models download brain-extraction`, or say the scan is skull-stripped"
                ) from None
    wheel = Path(wheel)
    digest = file_sha256(wheel)
    if digest != release.sha256:
        raise CheckpointError(
            f"{wheel.name} has sha256 {digest[:12]}…, not the published {release.sha256[:12]}… of "
            f"{release.name} {release.version}"
        )
    tensors = {}
    with zipfile.ZipFile(wheel) as archive:
        for network, member in release.members.items():
            with archive.open(member) as fh:
                data = fh.read()
            for key, value in read_tensors(data, label=f"{wheel.name}:{member}").items():
                tensors[f"{network}.{key}"] = value.contiguous()
    from safetensors.torch import save_file

    tmp = temporary_sibling(dest, ".safetensors")
    try:
        save_file(tensors, str(tmp), metadata={"source": release.url, "wheel_sha256": release.sha256})
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def load_networks(release: ExtractorRelease = DEEPBET, *, home: Path | None = None) -> tuple[dict, str]:
    """The two networks' state dicts (``{"bbox": ..., "brain": ...}``) and the safetensors file's sha256,
    installing the weights first when they are missing."""
    path = install_weights(release, home=home)
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        flat = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path} cannot be read ({exc}); delete it to fetch the weights again") from None
    nets: dict[str, dict[str, torch.Tensor]] = {name: {} for name in release.members}
    for key, value in flat.items():
        network, _, rest = key.partition(".")
        if network not in nets:
            raise CheckpointError(f"{path.name} has an unexpected tensor {key!r}")
        nets[network][rest] = value
    return nets, file_sha256(path)
