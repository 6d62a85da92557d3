"""The tensors of a TorchScript archive, read without running anything stored in it.

``torch.jit.load`` compiles and runs the Python-like code that a TorchScript file carries; the
project's rule is that no code from a model file is ever executed. The tensors, however, sit in the
archive's ``data.pkl`` as a tree of module objects whose only contents are attributes and tensors.
This reader unpickles that tree with an allow-list: module classes become inert attribute holders,
tensors are rebuilt from the archive's raw storages, and any other global the pickle asks for is
refused (:class:`~SynthBrainLib.errors.CheckpointError`).
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError

#: TorchScript storage class names -> dtypes (the ones a float network can hold)
_STORAGES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


class _Attributes:
    """What a scripted module becomes here: its pickled attribute dict, nothing callable."""

    def __init__(self, *args: Any) -> None:
        self.state: dict = {}

    def __setstate__(self, state: Any) -> None:
        self.state = dict(state) if isinstance(state, dict) else {}


def _rebuild_tensor(storage: torch.Tensor, offset: int, size, stride, *_ignored) -> torch.Tensor:
    return torch.as_strided(storage, tuple(size), tuple(stride), int(offset)).clone()


class _Reader(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, root: str) -> None:
        super().__init__(io.BytesIO(data))
        self._archive, self._root = archive, root

    def find_class(self, module: str, name: str):
        if module.startswith("__torch__"):
            return _Attributes
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGES:
            return _STORAGES[name]
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a weights file")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], torch.dtype)):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r:.60}")
        _, dtype, key, _location, numel = pid
        raw = self._archive.read(f"{self._root}/data/{key}")
        itemsize = torch.empty((), dtype=dtype).element_size()
        if len(raw) < int(numel) * itemsize:
            raise pickle.UnpicklingError(f"storage {key} holds {len(raw)} bytes, {numel} elements expected")
        array = np.frombuffer(raw, dtype=np.uint8, count=int(numel) * itemsize).copy()
        return torch.from_numpy(array).view(dtype)


def read_tensors(
    source: str | bytes | io.BufferedIOBase, *, label: str = "TorchScript file"
) -> dict[str, torch.Tensor]:
    """The named tensors (a state dict: ``"down1.block1.downsample.0.weight"`` ...) of a TorchScript archive.

    Args:
        source: the archive's path, its bytes, or an open binary file.
        label: how to name it in an error.

    Raises:
        CheckpointError: not a TorchScript archive, or its pickle asks for anything but modules and tensors.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source)
        names = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(names) != 1:
            raise CheckpointError(f"{label} is not a TorchScript archive (no single <name>/data.pkl)")
        root = names[0].split("/")[0]
        tree = _Reader(archive.read(names[0]), archive, root).load()
    except (zipfile.BadZipFile, pickle.UnpicklingError, KeyError, EOFError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{label} cannot be read as TorchScript weights: {exc}") from None
    tensors: dict[str, torch.Tensor] = {}
    _collect(tree, "", tensors)
    if not tensors:
        raise CheckpointError(f"{label} holds no tensors")
    return tensors


def _collect(node: Any, prefix: str, out: dict[str, torch.Tensor]) -> None:
    if not isinstance(node, _Attributes):
        return
    for name, value in node.state.items():
        if isinstance(value, torch.Tensor):
            out[prefix + name] = value
        elif isinstance(value, _Attributes):
            _collect(value, f"{prefix}{name}.", out)
