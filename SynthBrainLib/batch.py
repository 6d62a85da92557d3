"""``synthbrain batch``: many samples, resumable, optionally sharded over processes with torchrun.

Sample ``i`` (0 <= i < N) is fully determined by the batch settings and ``i``:

* its conditions: row ``i`` of a CSV (columns named like the card's variables, real units), or
  values drawn from the given ranges by a generator seeded with (base seed, i), or the card's
  defaults;
* its seed: :func:`sample_seed` (base seed, i), a 63-bit number from SHA-256.

So the output does not depend on how many processes share the work. Rank ``r`` of ``W`` (torchrun's
``RANK`` / ``WORLD_SIZE``; 0 of 1 without torchrun) makes the samples with ``i % W == r``, each
written atomically by :func:`SynthBrainLib.outputs.io.write_result` as ``sample_<i>.nii.gz`` plus its
provenance sidecar ``sample_<i>.json``. A sample whose image and sidecar exist and whose sidecar
records the same request is skipped, so an interrupted batch resumes where it stopped; an image
without its sidecar (killed between the two renames) is made again. ``batch.json`` records the
settings; restarting with other settings into the same folder is refused.

When every rank is done (a gloo barrier under torchrun), rank 0 rebuilds ``manifest.csv`` from the
sidecars - so a kill at any moment never loses or duplicates a row - and writes it atomically.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .errors import ConditionError, OutputError, SynthBrainError
from .models.conditioning import resolve_conditions, resolve_sampler, whole_number
from .outputs.atomic_files import TEMPORARY_MARK, AlreadyExists, remove_stale_temporaries, replaced_atomically
from .outputs.digests import file_sha256
from .outputs.interrupts import check_cancel, terminate_as_interrupt
from .outputs.io import as_path, ensure_writable, output_paths, sidecar_path, write_result

BATCH_FILE = "batch.json"
MANIFEST_FILE = "manifest.csv"
SUFFIXES = (".nii.gz", ".nii", ".nrrd")
MAX_SAMPLES = 1_000_000


def sample_seed(base_seed: int, index: int) -> int:
    """The noise seed of sample ``index``: the first 8 bytes of SHA-256("synthbrain-batch:<base>:<index>"),
    as a number in 0 .. 2**63 - 1 (the pipelines' seed range)."""
    digest = hashlib.sha256(f"synthbrain-batch:{int(base_seed)}:{int(index)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


@dataclass(frozen=True)
class Range:
    """A condition drawn per sample: uniform in [lo, hi] (continuous) or uniform over ``choices``."""

    name: str
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> "Range":
        """``age=45:82`` (continuous) or ``sex=female,male`` (choices)."""
        if "=" not in text:
            raise ConditionError(f"range {text!r} is not NAME=LO:HI or NAME=A,B,...")
        name, spec = (s.strip() for s in text.split("=", 1))
        name = name.replace("-", "_")
        if ":" in spec:
            lo_text, hi_text = spec.split(":", 1)
            try:
                lo, hi = float(lo_text), float(hi_text)
            except ValueError:
                raise ConditionError(f"range {text!r}: {spec!r} is not LO:HI with two numbers") from None
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise ConditionError(f"range {text!r}: both ends must be finite numbers")
            if not lo <= hi:
                raise ConditionError(f"range {text!r}: low end {lo:g} is above high end {hi:g}")
            return cls(name, lo, hi)
        choices = tuple(c.strip() for c in spec.split(",") if c.strip())
        if not choices:
            raise ConditionError(f"range {text!r} names no values")
        return cls(name, choices=choices)

    def draw(self, rng: np.random.Generator) -> float | str:
        if self.choices:
            return self.choices[int(rng.integers(len(self.choices)))]
        return float(np.round(rng.uniform(self.lo, self.hi), 4))

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "lo": self.lo, "hi": self.hi, "choices": list(self.choices)}


@dataclass(frozen=True)
class BatchPlan:
    """What a batch makes: N requests (index, seed, conditions) and how."""

    model: str
    count: int
    base_seed: int
    conditions: tuple[dict[str, Any], ...]
    sampler: str | None = None
    steps: int | None = None
    suffix: str = ".nii.gz"
    settings: Mapping[str, Any] = field(default_factory=dict)

    def seed(self, index: int) -> int:
        return sample_seed(self.base_seed, index)

    def file(self, out: Path, index: int) -> Path:
        return out / f"sample_{index:05d}{self.suffix}"

    def as_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "count": self.count,
            "base_seed": self.base_seed,
            "sampler": self.sampler,
            "steps": self.steps,
            "suffix": self.suffix,
            "settings": dict(self.settings),
            "conditions_sha256": hashlib.sha256(json.dumps(list(self.conditions), sort_keys=True).encode()).hexdigest(),
        }


def read_conditions_csv(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a conditions CSV: one column per condition (real units; empty cell = card default)."""

    try:
        path = as_path(path, "conditions file")
    except OutputError as exc:
        raise SynthBrainError(str(exc)) from None
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise SynthBrainError(f"cannot read conditions file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise SynthBrainError(
            f"conditions file {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8 CSV"
        ) from None
    try:
        return _parse_conditions(path, csv.DictReader(io.StringIO(text)))
    except csv.Error as exc:
        raise SynthBrainError(f"conditions file {path} is not a usable CSV table: {exc}") from None


def _parse_conditions(path: Path, reader: csv.DictReader) -> list[dict[str, Any]]:
    if not reader.fieldnames:
        raise SynthBrainError(f"conditions file {path} has no header row")
    rows = []
    for row in reader:
        values: dict[str, Any] = {}
        for key, value in row.items():
            if key is None or value is None or value.strip() == "":
                continue
            name = key.strip().replace("-", "_")
            text_value = value.strip()
            try:
                values[name] = float(text_value)
            except ValueError:
                values[name] = text_value
        rows.append(values)
    if not rows:
        raise SynthBrainError(f"conditions file {path} has no rows")
    return rows


def plan_batch(
    card,
    model: str,
    *,
    count: int | None,
    base_seed: int,
    rows: Sequence[Mapping[str, Any]] | None = None,
    ranges: Sequence[Range] = (),
    sampler: str | None = None,
    steps: int | None = None,
    suffix: str = ".nii.gz",
    settings: Mapping[str, Any] | None = None,
) -> BatchPlan:
    """Check the request against the card and fix every sample's conditions.

    Raises:
        ConditionError: an unknown condition name, a value outside the card's range, a bad count,
            sampler or steps (checked for every sample before anything runs).
    """

    base_seed = whole_number("seed", base_seed, 0, 2**63 - 1)
    if rows is not None and ranges:
        raise ConditionError("give conditions as a CSV or as ranges, not both")
    if count is None:
        if rows is None:
            raise ConditionError("say how many samples to make (-n N) or give a conditions CSV")
        count = len(rows)
    count = whole_number("sample count", count, 1, MAX_SAMPLES)
    if rows is not None and count > len(rows):
        raise ConditionError(f"sample count {count} is more than the {len(rows)} rows of the conditions file")
    names = card.conditioning.names
    for r in ranges:
        if r.name not in names:
            raise ConditionError(f"condition {r.name!r} is not one of {', '.join(names)}")
        for end in r.choices or (r.lo, r.hi):  # the range itself, not a value drawn from it
            try:
                resolve_conditions(card.conditioning, {r.name: end}, None)
            except ConditionError as exc:
                spec = ",".join(r.choices) if r.choices else f"{r.lo:g}:{r.hi:g}"
                raise ConditionError(f"range {r.name}={spec}: {exc}") from None
    if suffix not in SUFFIXES:
        raise OutputError(f"output format {suffix!r} is not one of {', '.join(SUFFIXES)}")
    if card.sampling is not None:  # a model without sampling needs an input: refused below
        resolve_sampler(card.sampling, card.scheduler, sampler, steps)
    conditions: list[dict[str, Any]] = []
    for i in range(count):
        if rows is not None:
            values = dict(rows[i])
        else:
            rng = np.random.default_rng([int(base_seed), i, 0x5B])
            values = {r.name: r.draw(rng) for r in ranges}
        try:
            resolve_conditions(card.conditioning, values, None)
        except ConditionError as exc:
            where = f"row {i + 1} of the conditions file" if rows is not None else f"sample {i}"
            raise ConditionError(f"{where}: {exc}") from None
        conditions.append(values)
    # Last, because finding the card's pipeline class imports torch (seconds): every argument above
    # is answered before that.
    from .pipelines import pipeline_class

    needed = pipeline_class(card).input_name
    if needed is not None:
        raise ConditionError(
            f"model {card.id} is a {card.kind} model, which needs {needed} as input; 'batch' makes images or "
            "label maps from conditions alone"
        )
    return BatchPlan(
        model=model,
        count=count,
        base_seed=base_seed,
        conditions=tuple(conditions),
        sampler=sampler,
        steps=steps,
        suffix=suffix,
        settings=dict(settings or {}),
    )


# ----------------------------------------------------------------------------------------------
# Distributed context
# ----------------------------------------------------------------------------------------------
def rank_and_world() -> tuple[int, int]:
    """torchrun's RANK / WORLD_SIZE, or (0, 1) when not run by torchrun."""
    try:
        rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise SynthBrainError(
            f"RANK {os.environ.get('RANK')!r} / WORLD_SIZE {os.environ.get('WORLD_SIZE')!r} are not whole numbers"
        ) from None
    if world < 1 or not 0 <= rank < world:
        raise SynthBrainError(f"RANK {rank} is outside 0–{world - 1} (WORLD_SIZE {world})")
    return rank, world


def _start_distributed(world: int) -> None:
    """Join torchrun's rendezvous (gloo: only a barrier is needed, on any device)."""
    if world == 1:
        return
    import datetime

    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=datetime.timedelta(hours=48))


def _barrier(world: int) -> None:
    """Wait for every rank; nothing to do for one process."""
    if world == 1:
        return
    import torch.distributed as dist

    dist.barrier()


def _finish_distributed(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


# ----------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------
def _request_record(plan: BatchPlan, index: int) -> dict[str, Any]:
    """What identifies sample ``index`` (stored in its provenance as ``batch``)."""
    return {
        "index": index,
        "base_seed": plan.base_seed,
        "seed": plan.seed(index),
        "requested_conditions": plan.conditions[index],
        "sampler": plan.sampler,
        "steps": plan.steps,
        "settings": dict(plan.settings),
    }


def _finished(plan: BatchPlan, out: Path, index: int) -> bool:
    """Whether sample ``index`` is complete (image and sidecar) and was made for this request."""

    data = plan.file(out, index)
    side = sidecar_path(data)
    if not (data.is_file() and side.is_file()):
        return False
    try:
        record = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    batch = record.get("batch") if isinstance(record, dict) else None
    if not isinstance(batch, dict) or not batch:
        return False  # a damaged sidecar (not a sample's record at all): the sample is made again
    expected = json.loads(json.dumps(_request_record(plan, index)))
    if {k: batch.get(k) for k in expected} != expected or record.get("model", {}).get("id") != plan.settings.get(
        "model_id"
    ):
        raise OutputError(f"{data} was made for another request; use another output folder")
    # a file damaged after it was written (its sidecar says what it held) is made again
    return file_sha256(data) == record.get("sha256_of_data")


def prepare_output_folder(out: str | Path) -> Path:
    """The batch's folder, created if needed (a one-line error for a file in the way, a place where
    folders cannot be made, or one that cannot be written)."""

    out = as_path(out, "output folder")
    try:
        if out.exists() and not out.is_dir():
            raise OutputError(f"output folder {out} is a file, not a folder")
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # cannot be made here, or a name the system refuses (too long)
        raise OutputError(f"cannot create the output folder {out}: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write into the output folder {out}: no permission")
    return out


def _check_batch_file(out: Path, plan: BatchPlan, rank: int) -> None:
    """Claim ``out`` for this batch: ``batch.json`` is created exclusively, so of two different
    batches started into one folder at the same moment exactly one gets it; the other (and any
    later run with other settings) is refused. Runs of the same batch (restarts, torchrun ranks)
    find their own settings there and go on."""

    path = out / BATCH_FILE
    spec = json.loads(json.dumps(plan.as_json()))
    if not os.path.lexists(path):
        try:
            with replaced_atomically(path, suffix=".tmp", overwrite=False) as tmp:
                tmp.write_text(json.dumps(spec, indent=2), encoding="utf-8")
            return
        except AlreadyExists:
            pass  # another process claimed the folder a moment ago: compare with its settings
    try:
        existing = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        existing = None
    if existing != spec:
        raise OutputError(
            f"{out} holds a batch made with other settings ({BATCH_FILE} differs); use another output folder"
        )


def run_batch(
    pipe,
    plan: BatchPlan,
    out: str | Path,
    *,
    rank: int = 0,
    world: int = 1,
    progress: Callable[[int, int], None] | None = None,
    log: Callable[[str], None] = lambda line: None,
    cancel=None,
) -> dict[str, Any]:
    """Make this rank's share of ``plan`` in ``out`` (skipping finished samples), wait for the other
    ranks, and (rank 0) write the manifest.

    Returns:
        ``{"made": [...], "skipped": [...], "manifest": path or None, "missing": [...]}``.
    """

    out = prepare_output_folder(out)
    _check_batch_file(out, plan, rank)
    _start_distributed(world)
    mine = [i for i in range(plan.count) if i % world == rank]

    remove_stale_temporaries(out)  # left by a killed earlier run (a clean exit removes its own) ...
    for i in mine:  # ... and, whatever their age, those of this rank's own samples
        for target in (plan.file(out, i), sidecar_path(plan.file(out, i))):
            for leftover in out.glob(f".{target.name}{TEMPORARY_MARK}*"):
                leftover.unlink(missing_ok=True)
    made, skipped = [], []
    todo = []
    for i in mine:
        (skipped if _finished(plan, out, i) else todo).append(i)

    for i in todo:  # something in the way of a sample to make (a folder of that name): refuse before any work or output
        ensure_writable(output_paths(plan.file(out, i)), overwrite=True)
    if skipped:
        log(f"rank {rank}: {len(skipped)} of {len(mine)} samples already done")
    with terminate_as_interrupt():
        for k, i in enumerate(todo):
            check_cancel(cancel)
            result = pipe.generate(
                seed=plan.seed(i),
                sampler=plan.sampler,
                steps=plan.steps,
                cancel=cancel,
                guidance=plan.settings.get("guidance"),
                **plan.conditions[i],
            )
            array = result.image if result.image is not None else result.labels
            result.provenance["batch"] = dict(
                _request_record(plan, i), array_sha256=hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
            )
            write_result(result, plan.file(out, i), overwrite=True)  # a leftover image without its sidecar is replaced
            made.append(i)
            if progress is not None:
                progress(k + 1, len(todo))
    _barrier(world)
    manifest, missing = None, []
    if rank == 0:
        manifest, missing = write_manifest(plan, out)
    _finish_distributed(world)
    return {"made": made, "skipped": skipped, "manifest": manifest, "missing": missing}


#: Manifest columns before the per-condition ones.
MANIFEST_COLUMNS = (
    "index",
    "file",
    "seed",
    "base_seed",
    "model",
    "card_version",
    "kind",
    "sampler",
    "steps",
    "precision",
    "decode",
    "device",
    "array_sha256",
    "weights_sha256",
    "synthbrain",
)


def manifest_rows(plan: BatchPlan, out: Path) -> tuple[list[dict[str, Any]], list[int]]:
    """One row per finished sample, in index order, read from the sidecars; and the missing indices."""

    rows, missing = [], []
    for i in range(plan.count):
        data = plan.file(out, i)
        side = sidecar_path(data)
        if not (data.is_file() and side.is_file()):
            missing.append(i)
            continue
        rec = json.loads(side.read_text(encoding="utf-8"))
        cond = rec.get("conditions") or {}
        decode = rec.get("decode") or {}
        row: dict[str, Any] = {
            "index": i,
            "file": data.name,
            "seed": rec.get("seed"),
            "base_seed": plan.base_seed,
            "model": rec["model"]["id"],
            "card_version": rec["model"].get("card_version"),
            "kind": rec["model"].get("kind"),
            "sampler": rec.get("sampler"),
            "steps": rec.get("steps"),
            "precision": rec.get("precision"),
            "decode": decode.get("mode"),
            "device": rec.get("device"),
            "array_sha256": rec.get("batch", {}).get("array_sha256"),
            "weights_sha256": ";".join(
                f"{k}:{v.get('sha256')}" for k, v in sorted((rec.get("weights") or {}).items()) if isinstance(v, dict)
            ),
            "synthbrain": rec.get("versions", {}).get("synthbrain"),
        }
        for name, value in (cond.get("real_units") or {}).items():
            row[name] = value
        for name, value in (cond.get("model_units") or {}).items():
            row[f"{name}_model_units"] = value
        rows.append(row)
    return rows, missing


def write_manifest(plan: BatchPlan, out: Path) -> tuple[Path, list[int]]:
    """Rebuild ``manifest.csv`` from the sidecars and write it atomically."""

    rows, missing = manifest_rows(plan, out)
    columns = list(MANIFEST_COLUMNS)
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    path = out / MANIFEST_FILE
    with replaced_atomically(path, suffix=".tmp") as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8")
    return path, missing


def suffix_of(fmt: str) -> str:
    text = fmt.strip().lower()
    text = text if text.startswith(".") else "." + text
    if text not in SUFFIXES:
        raise OutputError(f"output format {fmt!r} is not one of {', '.join(s.lstrip('.') for s in SUFFIXES)}")
    return text
