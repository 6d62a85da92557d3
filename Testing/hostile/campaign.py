#!/usr/bin/env python3
"""Adversarial campaign: hundreds of bad, hostile and edge-case inputs against ``synthbrain`` and SynthBrainLib.

Run from the repository root (about 20-35 minutes on 2 CPU cores)::

    OMP_NUM_THREADS=1 .venv/bin/python Testing/hostile/campaign.py --json /tmp/campaign.json

Options: ``--only TEXT`` runs the cases whose id, category or description contains TEXT (repeatable),
``--list`` prints the cases without running them, ``--keep`` keeps the temporary folders.

Contract checked (README "Every bad input ends with one line on stderr and exit status 2, and writes nothing"):

* a bad CLI input ends with exactly one non-blank stderr line starting with ``synthbrain: error:``
  (argparse's ``synthbrain <command>: error:`` is counted as clean but marked in the detail), exit
  status 2, no traceback, and nothing new or changed in the case folder (outputs, sidecars,
  temporary ``.<name>.*`` files), in ``--home`` (the model cache) or in ``$SYNTHBRAIN_HOME``;
* a valid input exits 0 and writes the promised files (and no temporary files);
* in the Python API a bad argument raises a ``SynthBrainError`` subclass with a one-line message;
* never: a traceback, exit 1, a hang, an existing file replaced without ``--overwrite``, weights
  run under a trusted model id without matching its checksum, code run from a checkpoint (pickle
  payloads would create a marker file), ``$...`` expressions in configs evaluated.

Each case is recorded as ``rejected cleanly``, ``accepted correctly`` or ``broken`` (with the reason)
in the ``--json`` file; a summary table per category is printed at the end. CLI cases run one at a
time in subprocesses (memory-limited to 10 GiB, killed after a timeout); API cases run in-process.
Every temporary folder is removed at the end (``--keep`` keeps them).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import copy  # noqa: E402
import gzip  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import stat  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

SHIPPED = REPO / "Resources" / "Models"
MEM_LIMIT = 10 * 2**30  # per CLI subprocess (address space): a header bomb fails instead of exhausting the machine
DEFAULT_TIMEOUT = 240
OK_REJECT, OK_ACCEPT, BROKEN = "rejected cleanly", "accepted correctly", "broken"
ERR_RE = re.compile(r"^synthbrain(?: [a-z][a-z-]*)*: error: ")
CATEGORIES = {
    "generate": "1 generate",
    "labels": "2 labels / image-from-labels",
    "models": "3 models import / cards / checkpoints",
    "batch": "4 batch",
    "concurrency": "5 concurrency",
    "api": "6 Python API",
}


# ==============================================================================================
# Infrastructure
# ==============================================================================================
class G:
    """Campaign-wide state (set in main)."""

    root: Path
    markers: Path
    sentinel_home: Path
    fake_home: Path
    env: dict
    sb: list
    cache: Path
    euid: int = os.geteuid()


def short(text: Any, limit: int = 400) -> str:
    text = str(text)
    for root in {str(G.root), str(G.root.resolve())}:
        text = text.replace(root, "<tmp>")
    text = text.replace(str(REPO), "<repo>")
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class Ctx:
    d: Path  # the case folder, also the working directory of CLI cases
    home: Path  # --home of the case (an empty model cache)
    name: str


@dataclass
class Run:
    args: list
    rc: int | None
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False
    timeout: int = 0


def _child_limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEM_LIMIT, MEM_LIMIT))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def spawn(args: list, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        G.sb + [str(a) for a in args],
        cwd=str(cwd),
        env=G.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_child_limits,
    )


def finish(p: subprocess.Popen, args: list, start: float, timeout: int) -> Run:
    try:
        out, err = p.communicate(timeout=max(1, timeout - (time.time() - start)))
        timed_out = False
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        timed_out = True
    return Run(
        args,
        None if timed_out else p.returncode,
        out.decode("utf-8", "replace"),
        err.decode("utf-8", "replace"),
        time.time() - start,
        timed_out,
        timeout,
    )


ZYGOTE_CODE = r"""
import json, os, resource, sys, time, traceback
import torch, monai, monai.networks.nets, monai.networks.schedulers, nibabel, SimpleITK, safetensors.torch  # noqa: F401
import SynthBrainLib, SynthBrainLib.cli, SynthBrainLib.pipelines, SynthBrainLib.models.store  # noqa: F401
import SynthBrainLib.batch, SynthBrainLib.outputs.io, SynthBrainLib.outputs.preview  # noqa: F401
import SynthBrainLib.pipelines.sampling, SynthBrainLib.pipelines.schedulers  # noqa: F401
import SynthBrainLib.pipelines.decoding  # noqa: F401
proto = os.fdopen(os.dup(1), "w", buffering=1)
proto.write("ready\n")
for line in sys.stdin:
    req = json.loads(line)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        rc = 1
        try:
            os.setsid()
            resource.setrlimit(resource.RLIMIT_AS, (req["mem"], req["mem"]))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            os.chdir(req["cwd"])
            for fd, name, mode in (
                (0, os.devnull, os.O_RDONLY),
                (1, req["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                (2, req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
            ):
                f = os.open(name, mode, 0o644)
                os.dup2(f, fd)
                os.close(f)
            sys.argv = ["synthbrain", *req["argv"]]
            from SynthBrainLib.cli import main
            try:
                rc = main(req["argv"])
            except SystemExit as exc:  # argparse, --version
                code = exc.code
                rc = code if isinstance(code, int) else (0 if code is None else 1)
                if not isinstance(code, (int, type(None))):
                    print(code, file=sys.stderr)
            except BaseException:  # what the interpreter does with an uncaught exception
                traceback.print_exc()
                rc = 1
        except BaseException:
            traceback.print_exc()
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            except BaseException:
                pass
            os._exit(rc if isinstance(rc, int) else 1)
    deadline = time.time() + req["timeout"]
    timed_out = False
    while True:
        wpid, status = os.waitpid(pid, os.WNOHANG)
        if wpid:
            break
        if time.time() > deadline:
            try:
                os.killpg(pid, 9)
            except ProcessLookupError:
                pass
            _, status = os.waitpid(pid, 0)
            timed_out = True
            break
        time.sleep(0.02)
    proto.write(json.dumps({"rc": os.waitstatus_to_exitcode(status), "timed_out": timed_out}) + "\n")
"""


class Zygote:
    """A process that imports torch, MONAI and SynthBrainLib once and forks a fresh child per CLI
    case running ``SynthBrainLib.cli.main(argv)`` - what the ``synthbrain`` entry point does - with
    its own working directory, stdin/stdout/stderr, process group and memory limit. Saves the 3-5 s
    of imports per case; concurrency cases and the fidelity check use real subprocesses."""

    def __init__(self) -> None:
        self.p: subprocess.Popen | None = None
        self.n = 0

    def start(self) -> None:
        log = open(G.root / "zygote.log", "ab")
        self.p = subprocess.Popen(
            [sys.executable, "-c", ZYGOTE_CODE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            env=G.env,
            cwd=str(G.root),
        )
        log.close()
        if self.p.stdout.readline().strip() != b"ready":
            raise RuntimeError("the fork server did not start; see zygote.log")

    def run(self, args: list, cwd: Path, timeout: int) -> Run:
        if self.p is None or self.p.poll() is not None:
            self.start()
        self.n += 1
        io_dir = G.root / "io"
        io_dir.mkdir(exist_ok=True)
        out, err = io_dir / f"{self.n}.out", io_dir / f"{self.n}.err"
        req = {
            "argv": [str(a) for a in args],
            "cwd": str(cwd),
            "stdout": str(out),
            "stderr": str(err),
            "timeout": timeout,
            "mem": MEM_LIMIT,
        }
        start = time.time()
        self.p.stdin.write((json.dumps(req) + "\n").encode())
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line:
            self.p = None
            raise RuntimeError("the fork server died")
        res = json.loads(line)
        run = Run(
            args,
            None if res["timed_out"] else res["rc"],
            out.read_bytes().decode("utf-8", "replace"),
            err.read_bytes().decode("utf-8", "replace"),
            time.time() - start,
            res["timed_out"],
            timeout,
        )
        out.unlink(missing_ok=True)
        err.unlink(missing_ok=True)
        return run

    def close(self) -> None:
        if self.p is not None and self.p.poll() is None:
            self.p.stdin.close()
            try:
                self.p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.p.kill()


ZYGOTE: Zygote | None = None


def run_cli(args: list, cwd: Path, timeout: int = DEFAULT_TIMEOUT, real: bool = False) -> Run:
    """``synthbrain ARGS`` in ``cwd``: forked from the fork server, or (``real``) as a fresh subprocess."""
    if ZYGOTE is not None and not real:
        return ZYGOTE.run(args, cwd, timeout)
    start = time.time()
    return finish(spawn(args, cwd), args, start, timeout)


def snapshot(roots) -> dict:
    """Every entry under ``roots``: type, and for files size / mtime / inode, for links the target."""
    state: dict[str, tuple] = {}
    for root in roots:
        root = str(root)
        if not os.path.lexists(root):
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                p = os.path.join(dirpath, name)
                try:
                    st = os.lstat(p)
                except OSError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    state[p] = ("dir",)
                elif stat.S_ISLNK(st.st_mode):
                    state[p] = ("link", os.readlink(p))
                else:
                    state[p] = ("file", st.st_size, st.st_mtime_ns, st.st_ino)
    return state


def changes(before: dict, after: dict) -> list[str]:
    out = [f"new {p}" for p in after if p not in before]
    out += [f"removed {p}" for p in before if p not in after]
    out += [f"changed {p}" for p in after if p in before and before[p] != after[p]]
    return out


def markers_fired() -> list[str]:
    found = sorted(p.name for p in G.markers.iterdir())
    for p in G.markers.iterdir():
        p.unlink()
    return found


def lines_of(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def tb_where(text: str) -> str:
    frames = re.findall(r'File "([^"]+)", line (\d+), in (\S+)', text)
    if not frames:
        return ""
    lib = [f for f in frames if "SynthBrainLib" in f[0]]
    f = (lib or frames)[-1]
    path = f[0].split("SynthBrainLib/", 1)[-1] if "SynthBrainLib/" in f[0] else f[0]
    prefix = "SynthBrainLib/" if "SynthBrainLib/" in f[0] else ""
    return f"{prefix}{path}:{f[1]} in {f[2]}()"


def evidence(run: Run) -> str:
    ls = lines_of(run.stderr)
    parts = []
    if "Traceback (most recent call last)" in run.stderr:
        parts.append(f"exception: {ls[-1][:300]}" if ls else "traceback")
        where = tb_where(run.stderr)
        if where:
            parts.append(f"at {where}")
    elif ls:
        parts.append("stderr: " + " / ".join(x[:200] for x in ls[:3]))
    else:
        parts.append("stderr empty")
    return " | ".join(parts)


def reject_problems(run: Run, diff: list[str]) -> list[str]:
    p = []
    ls = lines_of(run.stderr)
    if run.timed_out:
        p.append(f"hung: killed after {run.timeout}s")
    elif run.rc == 0:
        p.append("accepted (exit 0)")
    elif run.rc != 2:
        p.append(
            f"exit status {run.rc}"
            + (" (killed by a signal, e.g. out of memory)" if run.rc is not None and run.rc < 0 else "")
            + ", expected 2"
        )
    if "Traceback (most recent call last)" in run.stderr:
        p.append("traceback on stderr")
    elif run.rc != 0:
        if len(ls) != 1:
            p.append(f"{len(ls)} stderr lines, expected exactly 1")
        elif not ERR_RE.match(ls[0]):
            p.append("stderr line does not start with 'synthbrain: error:'")
    if diff:
        p.append("wrote or changed: " + ", ".join(diff[:4]) + (f" (+{len(diff) - 4} more)" if len(diff) > 4 else ""))
    return p


def accept_problems(run: Run, ctx: Ctx, diff: list[str], check: Callable | None, expected: tuple = ()) -> list[str]:
    p = []
    if run.timed_out:
        p.append(f"hung: killed after {run.timeout}s")
    elif run.rc != 0:
        p.append(f"valid input refused (exit {run.rc})")
    if "Traceback (most recent call last)" in run.stderr:
        p.append("traceback on stderr")
    if not p:
        leftovers = [
            c
            for c in diff
            if c.startswith("new ")
            and Path(c[4:]).name.startswith(".")
            and Path(c[4:]).parent == ctx.d
            and Path(c[4:]).name not in expected
        ]
        if leftovers:
            p.append("temporary files left: " + ", ".join(leftovers))
        if check is not None:
            problem = check(ctx, run)
            if problem:
                p.append(problem)
    return p


def judge(
    expect: str, run: Run, diff: list[str], ctx: Ctx, check: Callable | None = None, expected: tuple = ()
) -> tuple[str, str]:
    """(outcome, detail) of one CLI run."""
    ls = lines_of(run.stderr)
    first = ls[0] if ls else ""
    note = " [argparse prefix]" if first and not first.startswith("synthbrain: error:") and ERR_RE.match(first) else ""
    if expect in ("bad", "either"):
        rp = reject_problems(run, diff)
        if not rp:
            return OK_REJECT, short(first) + note
        if expect == "either" and run.rc == 0:
            ap = accept_problems(run, ctx, diff, check, expected)
            if not ap:
                return OK_ACCEPT, "exit 0" + (
                    ": " + short(run.stdout.strip().replace("\n", ", "), 200) if run.stdout.strip() else ""
                )
            return BROKEN, short("; ".join(ap) + " | " + evidence(run), 900)
        return BROKEN, short("; ".join(rp) + " | " + evidence(run), 900)
    ap = accept_problems(run, ctx, diff, check, expected)
    if not ap:
        return OK_ACCEPT, "exit 0" + (
            ": " + short(run.stdout.strip().replace("\n", ", "), 200) if run.stdout.strip() else ""
        )
    return BROKEN, short("; ".join(ap) + " | " + evidence(run), 900)


def expand(x: Any, ctx: Ctx) -> Any:
    if callable(x):
        return x(ctx)
    if isinstance(x, (list, tuple)):
        return [expand(v, ctx) for v in x]
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, str):
        return x.replace("{d}", str(ctx.d)).replace("{home}", str(ctx.home))
    return x


def watched(ctx: Ctx) -> list:
    return [ctx.d, ctx.home, G.sentinel_home]


# ----------------------------------------------------------------------------------------------
# Case registry
# ----------------------------------------------------------------------------------------------
CASES: list[tuple[str, str, Callable[[Ctx], Any]]] = []


def add(category: str, desc: str, fn: Callable[[Ctx], Any]) -> None:
    CASES.append((category, desc, fn))


def cli(
    category: str,
    desc: str,
    args,
    expect: str = "bad",
    setup: Callable | None = None,
    check: Callable | None = None,
    home: Any = None,
    timeout: int = DEFAULT_TIMEOUT,
    files: list[str] | None = None,
    real: bool = False,
) -> None:
    """A CLI case: ``synthbrain --home HOME ARGS`` in the case folder.

    ``files``: outputs (relative to the case folder) a valid run must create.
    """

    def fn(ctx: Ctx):
        if setup is not None:
            setup(ctx)
        argv = [str(a) for a in expand(args, ctx)]
        h = ctx.home if home is None else expand(home, ctx)
        full = (["--home", str(h)] if h is not False else []) + argv
        before = snapshot(watched(ctx))
        run = run_cli(full, ctx.d, timeout, real=real)
        diff = changes(before, snapshot(watched(ctx)))

        def both(c: Ctx, r: Run):
            for f in files or ():
                if not (c.d / f).is_file():
                    return f"promised file {f} missing"
            return check(c, r) if check else None

        return judge(expect, run, diff, ctx, both, tuple(Path(f).name for f in files or ()))

    add(category, desc, fn)


def api(
    category: str,
    desc: str,
    call: Callable[[Ctx], Any],
    expect: str = "bad",
    setup: Callable | None = None,
    check: Callable | None = None,
) -> None:
    """An in-process API case: ``call(ctx)`` should raise a one-line SynthBrainError (bad), return (good) or either."""

    def fn(ctx: Ctx):
        from SynthBrainLib.errors import SynthBrainError

        if setup is not None:
            setup(ctx)
        before = snapshot(watched(ctx))
        try:
            value = call(ctx)
        except SynthBrainError as exc:
            diff = changes(before, snapshot(watched(ctx)))
            msg = str(exc)
            problems = []
            if "\n" in msg.strip():
                problems.append(f"{type(exc).__name__} message has {len(msg.strip().splitlines())} lines")
            if not msg.strip():
                problems.append(f"{type(exc).__name__} with an empty message")
            if diff:
                problems.append("wrote or changed: " + ", ".join(diff[:4]))
            if expect == "good":
                problems.insert(0, "valid call refused")
            if problems:
                return BROKEN, short("; ".join(problems) + f" | {type(exc).__name__}: {msg!r}", 900)
            return OK_REJECT, short(f"{type(exc).__name__}: {msg}")
        except (Exception, RecursionError, MemoryError) as exc:  # noqa: BLE001 - classifying is the point
            where = ""
            tb = traceback.extract_tb(exc.__traceback__)
            lib = [f for f in tb if "SynthBrainLib" in f.filename]
            if lib or tb:
                f = (lib or tb)[-1]
                fname = f.filename.split("SynthBrainLib/", 1)[-1]
                where = f" at {'SynthBrainLib/' if lib else ''}{fname}:{f.lineno} in {f.name}()"
            msg = (str(exc).strip().splitlines() or [""])[0][:250]
            return BROKEN, short(
                f"raw {type(exc).__module__ + '.' if type(exc).__module__ not in ('builtins',) else ''}"
                f"{type(exc).__name__}: {msg}{where}",
                900,
            )
        diff = changes(before, snapshot(watched(ctx)))
        if expect == "bad":
            return BROKEN, short(
                f"bad argument accepted: returned {type(value).__name__}" + (f"; wrote {diff[:3]}" if diff else ""), 600
            )
        problem = check(ctx, value) if check else None
        if problem:
            return BROKEN, short(problem, 600)
        return OK_ACCEPT, short(f"returned {type(value).__name__}")

    add(category, desc, fn)


# ==============================================================================================
# Input factories
# ==============================================================================================
def card_of(model: str) -> dict:
    return json.loads((SHIPPED / model / "card.json").read_text())


DEMO_AFFINE = np.asarray(card_of("label2image-demo")["output"]["affine"], dtype=np.float64)
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def phantom_labels(shape=(64, 80, 64)) -> np.ndarray:
    ii, jj, kk = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = np.sqrt(ii**2 + jj**2 + kk**2)
    lab = np.zeros(shape, np.uint8)
    lab[r < 0.85] = 2
    lab[r < 0.7] = 3
    lab[r < 0.25] = 1
    lab[r < 0.12] = 4
    lab[(np.abs(ii - 0.3) < 0.08) & (np.abs(jj) < 0.08) & (np.abs(kk - 0.2) < 0.08)] = 6
    lab[(kk < -0.6) & (r < 0.9) & (np.abs(ii) < 0.15) & (np.abs(jj) < 0.2)] = 5
    return lab


def save_nii(path: Path, array, affine=None, header_edit: Callable | None = None) -> Path:
    import nibabel as nib

    array = np.asarray(array)
    extra = {"dtype": array.dtype} if array.dtype in (np.int64, np.uint64) else {}
    img = nib.Nifti1Image(array, DEMO_AFFINE if affine is None else np.asarray(affine, dtype=np.float64), **extra)
    if header_edit is not None:
        header_edit(img)
    img.to_filename(str(path))
    return path


def nifti_with_sform(path: Path, array, sform) -> Path:
    """A NIfTI whose sform is ``sform`` exactly (zero, singular, NaN) and whose qform is unset."""
    import nibabel as nib

    arr = np.asarray(array)
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(arr.dtype)
    hdr.set_data_shape(arr.shape)
    hdr["vox_offset"] = 352
    s = np.asarray(sform, dtype=np.float64)
    hdr["srow_x"], hdr["srow_y"], hdr["srow_z"] = s[0], s[1], s[2]
    hdr["sform_code"] = 1
    hdr["qform_code"] = 0
    raw = hdr.binaryblock + b"\x00" * 4 + arr.tobytes(order="F")
    path.write_bytes(gzip.compress(raw) if str(path).endswith(".gz") else raw)
    return path


def save_nrrd(path: Path, array, affine=None) -> Path:
    import SimpleITK as sitk

    affine = DEMO_AFFINE if affine is None else np.asarray(affine)
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array).transpose(2, 1, 0)))
    lps = LPS @ affine
    sp = np.linalg.norm(lps[:3, :3], axis=0)
    img.SetSpacing(sp.tolist())
    img.SetDirection((lps[:3, :3] / sp).flatten().tolist())
    img.SetOrigin(lps[:3, 3].tolist())
    sitk.WriteImage(img, str(path), True)
    return path


def nifti_header_bomb(path: Path, shape, dtype=np.uint8, gz: bool = False, payload: int = 1024) -> Path:
    import nibabel as nib

    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(dtype)
    hdr.set_data_shape(shape)
    hdr.set_sform(DEMO_AFFINE, 1)
    hdr.set_qform(DEMO_AFFINE, 1)
    hdr["vox_offset"] = 352
    raw = hdr.binaryblock + b"\x00" * 4 + b"\x01" * payload
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep))])
    return path


def deep_json(depth: int = 200_000) -> str:
    return "[" * depth + "]" * depth


class Payload:
    """Unpickling this runs ``touch <marker>``: a checkpoint must never do that."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


class EvalPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        import builtins

        return (builtins.eval, (f"open({self.marker!r}, 'w').close()",))


def marker(name: str) -> Path:
    return G.markers / name


def write_payload(path: Path, kind: str, name: str) -> Path:
    """A checkpoint file that runs code when unpickled; ``kind`` picks the container."""
    import pickle

    import torch

    m = marker(name)
    if kind == "zip":
        torch.save({"weight": Payload(m)}, str(path))
    elif kind == "zip-state-dict":
        torch.save({"state_dict": {"conv.weight": torch.zeros(2), "evil": EvalPayload(m)}}, str(path))
    elif kind == "legacy":
        torch.save({"weight": Payload(m)}, str(path), _use_new_zipfile_serialization=False)
    elif kind == "raw":
        path.write_bytes(pickle.dumps(Payload(m), protocol=2))
    elif kind == "raw-eval":
        path.write_bytes(pickle.dumps({"x": EvalPayload(m)}, protocol=4))
    else:
        raise ValueError(kind)
    return path


def perturbed_weights(
    src: Path, dst: Path, seed: int = 0, scale: float = 0.05, fill: float | None = None, edit: Callable | None = None
) -> Path:
    import torch
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(src))
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in tensors.items():
        if fill is not None:
            out[k] = torch.full_like(v, fill)
        elif v.is_floating_point():
            out[k] = (v + scale * torch.randn(v.shape, generator=g, dtype=v.dtype)).contiguous()
        else:
            out[k] = v
    if edit is not None:
        out = edit(out)
    save_file(out, str(dst))
    return dst


def model_folder(
    ctx: Ctx,
    src: str = "brain-ldm-demo",
    name: str = "model",
    edit: Callable | None = None,
    raw: bytes | str | None = None,
    strip_checksums: bool = False,
    weights: Callable | None = None,
) -> Path:
    """A copy of a shipped model folder with its card edited (``edit(card)`` may return a new value) or
    replaced (``raw``)."""
    dst = ctx.d / name
    shutil.copytree(SHIPPED / src, dst)
    if weights is not None:
        weights(dst)
    if raw is not None:
        (dst / "card.json").write_bytes(raw if isinstance(raw, bytes) else raw.encode("utf-8"))
        return dst
    card = json.loads((dst / "card.json").read_text())
    if strip_checksums:
        for w in card["weights"].values():
            for key in ("sha256", "md5", "size_bytes"):
                w.pop(key, None)
    if edit is not None:
        new = edit(card)
        card = new if isinstance(new, (dict, str)) else card
    (dst / "card.json").write_text(card if isinstance(card, str) else json.dumps(card, indent=1))
    return dst


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


SHIPPED_SHA = {
    m: {k: w["sha256"] for k, w in card_of(m)["weights"].items()}
    for m in ("brain-ldm-demo", "labels-demo", "label2image-demo")
}


def sidecar(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def check_volume(name: str, sidecar_name: str | None = None) -> Callable:
    """A valid run: data file and sidecar exist, the sidecar's sha256_of_data matches, it is marked synthetic."""

    def check(ctx: Ctx, run: Run):
        data = ctx.d / name
        side = ctx.d / (sidecar_name or re.sub(r"(\.nii\.gz|\.nii|\.nrrd)$", "", name, flags=re.I) + ".json")
        if not data.is_file():
            return f"promised output {name} missing"
        rec = sidecar(side)
        if rec is None:
            return f"sidecar {side.name} missing or unreadable"
        if rec.get("sha256_of_data") != sha256_file(data):
            return "sidecar sha256_of_data does not match the data file"
        if rec.get("synthetic") is not True:
            return "sidecar not marked synthetic"
        return None

    return check


# ==============================================================================================
# 1. generate
# ==============================================================================================
def GEN(*extra, out: str = "out.nii.gz", model: str = "brain-ldm-demo") -> list:
    return ["generate", "--model", model, "--seed", "1", "--preview-steps", "2", "--quiet", "-o", out, *extra]


def define_generate() -> None:
    c = "generate"
    good_vol = check_volume("out.nii.gz")
    # ---- conditions --------------------------------------------------------------------------
    for flag, values in {
        "--age": ["nan", "inf", "-inf", "1e400", "abc", "", "1e308", "-1", "44.999", "82.0001", "300", "0", "1_0"],
        "--ventricular-volume": ["nan", "-0.001", "95.01", "1e400", "x"],
        "--brain-volume": ["nan", "699", "1451", "-inf", "1e3x"],
    }.items():
        for v in values:
            cli(c, f"generate {flag} {v!r}", GEN(f"{flag}={v}"))
    for v in ["45", "82", "٧٠"]:
        cli(c, f"generate --age {v!r} (boundary / unicode digits)", GEN(f"--age={v}"), expect="good", check=good_vol)
    cli(
        c, "generate --ventricular-volume 0 (boundary)", GEN("--ventricular-volume", "0"), expect="good", check=good_vol
    )
    for v in ["", "alien", "0", "1", "f", "femalex", "None", "女", "female,male"]:
        cli(c, f"generate --sex {v!r}", GEN(f"--sex={v}"))
    for v in ["FEMALE", " male "]:
        cli(c, f"generate --sex {v!r} (case / spaces)", GEN(f"--sex={v}"), expect="good", check=good_vol)
    # ---- seed, steps, sampler ----------------------------------------------------------------
    for v in ["-1", str(2**64), str(2**63), "1.5", "abc", "", "0x10", "1e3"]:
        cli(c, f"generate --seed {v!r}", GEN(f"--seed={v}"))
    cli(c, "generate --seed 2**63-1 (largest)", GEN(f"--seed={2**63 - 1}"), expect="good", check=good_vol)
    for v in ["0", "-1", "1001", str(10**20), "2.5", "abc", ""]:
        cli(c, f"generate --steps {v!r}", GEN(f"--steps={v}"))
    cli(c, "generate --steps 1 (smallest)", GEN("--steps", "1"), expect="good", check=good_vol)
    for v in ["0", "-3", "100000"]:
        cli(c, f"generate --preview-steps {v!r}", GEN(f"--preview-steps={v}"))
    for v in ["pndm", "rflow", "", "euler", "ddim; rm -rf /", "dpm++2m "]:
        cli(c, f"generate --sampler {v!r}", GEN(f"--sampler={v}"))
    cli(c, "generate --sampler DDIM (upper case)", GEN("--sampler", "DDIM"), expect="good", check=good_vol)
    cli(c, "generate --sampler ddpm --steps 2", GEN("--sampler", "ddpm", "--steps", "2"), expect="good", check=good_vol)
    # ---- device / precision / decode ---------------------------------------------------------
    for v in ["cuda", "cuda:0", "cuda:-1", "gpu", "", "mps", "cpu:0", "cuda:99999999999999999999"]:
        cli(c, f"generate --device {v!r}", GEN(f"--device={v}"))
    cli(c, "generate --device ' CPU ' (case / spaces)", GEN("--device", " CPU "), expect="good", check=good_vol)
    for v in ["float16", "half", "", "fp32", "float64"]:
        cli(c, f"generate --precision {v!r}", GEN(f"--precision={v}"))
    for v in ["FLOAT32", "mixed", "bfloat16"]:
        cli(c, f"generate --precision {v}", GEN("--precision", v), expect="good", check=good_vol)
    for v in ["x", "", "tile"]:
        cli(c, f"generate --decode {v!r}", GEN(f"--decode={v}"))
    for v in ["TILED", "full"]:
        cli(c, f"generate --decode {v}", GEN("--decode", v), expect="good", check=good_vol)
    # ---- --raw -------------------------------------------------------------------------------
    for v in [
        "age",
        "age=",
        "=0.5",
        "age=abc",
        "age=nan",
        "age=1.5",
        "age=-0.1",
        "height=0.5",
        "sex=2",
        "age=1e999",
        "age=$__import__('os')",
    ]:
        cli(c, f"generate --raw {v!r}", GEN("--raw", v))
    cli(c, "generate --raw age=0.5 --age 70 (both)", GEN("--raw", "age=0.5", "--age", "70"))
    cli(c, "generate --raw age=0.5 twice", GEN("--raw", "age=0.5", "--raw", "age=0.5"))
    for v in ["brain_volume=0.4", "brain-volume=0.4", "sex=0.5"]:
        cli(c, f"generate --raw {v}", GEN("--raw", v), expect="good", check=good_vol)
    # ---- argument structure ------------------------------------------------------------------
    cli(c, "synthbrain (no arguments; real entry point)", [], real=True)
    cli(c, "synthbrain frobnicate (unknown command)", ["frobnicate"])
    cli(c, "generate --gender female (unknown option)", GEN("--gender", "female"))
    cli(c, "generate without -o", ["generate", "--model", "brain-ldm-demo", "--quiet"])
    cli(c, "generate --age (no value)", GEN("--age"))
    cli(c, "synthbrain --version (real entry point)", ["--version"], expect="good", home=False, real=True)
    # ---- --model -----------------------------------------------------------------------------
    for v in [
        "no-such-model",
        "",
        "../../etc",
        "/",
        "brain-ldm",
        "brainspade3d-labels",
        "label2image-demo",
        "labels-demo",
        "evil\nmodel",
        "Brain-LDM-Demo",
    ]:
        cli(c, f"generate --model {v!r}", GEN(model=v))
    cli(
        c,
        "generate --model <a file>",
        GEN(model="{d}/afile.txt"),
        setup=lambda ctx: (ctx.d / "afile.txt").write_text("x"),
    )
    cli(
        c,
        "generate --model <folder without card.json>",
        GEN(model="{d}/empty"),
        setup=lambda ctx: (ctx.d / "empty").mkdir(),
    )
    cli(c, "generate --model <path to shipped card.json>", GEN(model=str(SHIPPED / "brain-ldm-demo" / "card.json")))
    cli(
        c,
        "generate --model <shipped model folder path>",
        GEN(model=str(SHIPPED / "brain-ldm-demo")),
        expect="good",
        check=good_vol,
    )
    cli(
        c,
        "generate --home <a file>",
        GEN(),
        expect="either",
        home="{d}/homefile",
        setup=lambda ctx: (ctx.d / "homefile").write_text("x"),
        check=good_vol,
    )
    cli(c, "generate --home '' (empty)", GEN(), expect="either", home="", check=good_vol)

    # ---- outputs -----------------------------------------------------------------------------
    def existing(ctx):
        (ctx.d / "out.nii.gz").write_bytes(b"precious")

    cli(c, "generate -o <existing file> (no --overwrite)", GEN(), setup=existing)
    cli(
        c,
        "generate -o out.nii.gz with existing sidecar out.json",
        GEN(),
        setup=lambda ctx: (ctx.d / "out.json").write_text("{}"),
    )
    cli(
        c,
        "generate -o <dangling symlink>",
        GEN(),
        setup=lambda ctx: (ctx.d / "out.nii.gz").symlink_to(ctx.d / "missing-target.nii.gz"),
    )
    cli(
        c,
        "generate -o <dangling symlink into another folder>",
        GEN(),
        setup=lambda ctx: (
            (ctx.d / "elsewhere").mkdir(),
            (ctx.d / "out.nii.gz").symlink_to(ctx.d / "elsewhere" / "victim.nii.gz"),
        ),
    )

    def link_to_file(ctx):
        (ctx.d / "victim.txt").write_text("do not touch")
        (ctx.d / "out.nii.gz").symlink_to(ctx.d / "victim.txt")

    cli(c, "generate -o <symlink to an existing file>", GEN(), setup=link_to_file)
    cli(
        c,
        "generate -o out.nii.gz with dangling symlink at sidecar out.json",
        GEN(),
        setup=lambda ctx: (ctx.d / "out.json").symlink_to(ctx.d / "nowhere.json"),
    )
    cli(c, "generate -o <a directory named out.nii.gz>", GEN(), setup=lambda ctx: (ctx.d / "out.nii.gz").mkdir())
    cli(c, "generate -o <existing directory> (no extension)", GEN(out="{d}"))
    cli(c, "generate -o /proc/synthbrain-campaign.nii.gz", GEN(out="/proc/synthbrain-campaign.nii.gz"))
    cli(c, "generate -o /proc/self/out.nii.gz", GEN(out="/proc/self/out.nii.gz"))
    cli(c, "generate -o /sys/synthbrain-campaign.nii.gz (unwritable)", GEN(out="/sys/synthbrain-campaign.nii.gz"))
    cli(c, "generate -o /sys/newdir/out.nii.gz (unwritable parent)", GEN(out="/sys/synthbrain-campaign-dir/out.nii.gz"))
    if G.euid != 0:
        cli(
            c,
            "generate -o <chmod 555 folder>/out.nii.gz",
            GEN(out="ro/out.nii.gz"),
            setup=lambda ctx: ((ctx.d / "ro").mkdir(), os.chmod(ctx.d / "ro", 0o555)),
        )
    cli(
        c,
        "generate -o <file>/out.nii.gz (parent is a file)",
        GEN(out="afile.txt/out.nii.gz"),
        setup=lambda ctx: (ctx.d / "afile.txt").write_text("x"),
    )
    cli(c, "generate -o <300-character file name>", GEN(out="a" * 293 + ".nii.gz"))
    cli(c, "generate -o <path over 4096 characters>", GEN(out="/".join(["d" * 200] * 21) + "/out.nii.gz"))
    cli(
        c,
        "generate -o <247-character file name> (fits NAME_MAX)",
        GEN(out="b" * 240 + ".nii.gz"),
        expect="either",
        check=check_volume("b" * 240 + ".nii.gz"),
    )
    for v in ["out.png", "out.nii.gz.bak", "", "out", "out.mha", "out.nhdr", "out.json"]:
        cli(c, f"generate -o {v!r} (unsupported extension)", GEN(out=v))
    cli(c, "generate -o '.nii.gz' (empty stem)", GEN(out=".nii.gz"), expect="either", files=[".nii.gz", ".json"])
    cli(
        c,
        "generate -o out.NII.GZ (upper-case extension)",
        GEN(out="out.NII.GZ"),
        expect="either",
        check=check_volume("out.NII.GZ", "out.json"),
    )
    cli(c, "generate -o x.nii.gz --preview x.nii.gz (same file)", GEN("--preview", "x.nii.gz", out="x.nii.gz"))
    cli(c, "generate --preview out.jpg (not png)", GEN("--preview", "out.jpg"))
    cli(c, "generate --preview out.json (the sidecar)", GEN("--preview", "out.json"))
    cli(
        c,
        "generate --preview <existing png>",
        GEN("--preview", "p.png"),
        setup=lambda ctx: (ctx.d / "p.png").write_bytes(b"old"),
    )
    cli(
        c,
        "generate --preview <directory p.png>",
        GEN("--preview", "p.png"),
        setup=lambda ctx: (ctx.d / "p.png").mkdir(),
    )
    cli(
        c,
        "generate --preview /proc/p.png (fails after the volume is written)",
        GEN("--preview", "/proc/synthbrain-campaign.png"),
    )
    cli(
        c,
        "generate --preview new/sub/p.png (new folders)",
        GEN("--preview", "new/sub/p.png"),
        expect="good",
        files=["out.nii.gz", "new/sub/p.png"],
        check=good_vol,
    )
    cli(
        c,
        "generate -o deep/new/folders/out.nii.gz",
        GEN(out="deep/new/folders/out.nii.gz"),
        expect="good",
        check=check_volume("deep/new/folders/out.nii.gz"),
    )
    cli(c, "generate -o out.nrrd", GEN(out="out.nrrd"), expect="good", check=check_volume("out.nrrd"))
    cli(c, "generate -o <existing> --overwrite", GEN("--overwrite"), expect="good", setup=existing, check=good_vol)
    cli(
        c,
        "generate -o <existing name with a newline> (one-line error?)",
        GEN(out="bad\nname.nii.gz"),
        setup=lambda ctx: (ctx.d / "bad\nname.nii.gz").write_bytes(b"x"),
    )
    nonutf8 = os.fsdecode(b"caf\xe9-\xff.nii.gz")
    cli(
        c,
        "generate -o <non-UTF-8 file name b'caf\\xe9-\\xff.nii.gz'>",
        GEN(out=nonutf8),
        expect="either",
        check=check_volume(nonutf8),
    )


# ==============================================================================================
# 2. labels / image-from-labels
# ==============================================================================================
def IFL(labels: str = "{d}/lab.nii.gz", *extra, out: str = "out.nii.gz") -> list:
    return ["image-from-labels", labels, "--model", "label2image-demo", "--seed", "1", "--quiet", "-o", out, *extra]


def LAB(*extra, out: str = "lab.nii.gz") -> list:
    return ["labels", "--model", "labels-demo", "--seed", "3", "--preview-steps", "2", "--quiet", "-o", out, *extra]


def lab_file(writer: Callable[[Path], Any], name: str = "lab.nii.gz") -> Callable:
    def setup(ctx: Ctx):
        writer(ctx.d / name)

    return setup


def define_labels() -> None:
    c = "labels"
    base = phantom_labels()
    good = check_volume("out.nii.gz")
    # ---- labels command ----------------------------------------------------------------------
    cli(
        c,
        "labels --wmh 0.01 --partial-volumes pv.nii.gz (valid)",
        LAB("--wmh", "0.01", "--partial-volumes", "pv.nii.gz"),
        expect="good",
        files=["lab.nii.gz", "pv.nii.gz", "lab.json", "pv.json"],
        check=check_volume("lab.nii.gz"),
    )
    for flag, v in [
        ("--wmh", "-0.1"),
        ("--wmh", "2"),
        ("--wmh", "nan"),
        ("--tumour", "abc"),
        ("--edema", "inf"),
        ("--gdtumour", "1e400"),
    ]:
        cli(c, f"labels {flag} {v!r}", LAB(f"{flag}={v}"))
    cli(c, "labels --raw wmh=5", LAB("--raw", "wmh=5"))
    cli(c, "labels --partial-volumes <same as -o>", LAB("--partial-volumes", "lab.nii.gz"))
    cli(
        c, "labels -o lab.nii.gz --partial-volumes lab.nii (same sidecar lab.json)", LAB("--partial-volumes", "lab.nii")
    )
    cli(c, "labels --partial-volumes pv.png", LAB("--partial-volumes", "pv.png"))
    cli(
        c,
        "labels --model brain-ldm-demo (wrong kind)",
        ["labels", "--model", "brain-ldm-demo", "--seed", "3", "--quiet", "-o", "lab.nii.gz"],
    )
    cli(c, "labels --steps 0", LAB("--steps", "0"))
    cli(c, "labels --age 70 (condition of another model)", LAB("--age", "70"))
    # ---- image-from-labels: valid ------------------------------------------------------------
    cli(
        c,
        "image-from-labels uint8 label map (valid)",
        IFL(),
        expect="good",
        setup=lab_file(lambda p: save_nii(p, base)),
        check=good,
    )
    cli(
        c,
        "image-from-labels int16 label map",
        IFL(),
        expect="good",
        setup=lab_file(lambda p: save_nii(p, base.astype(np.int16))),
        check=good,
    )
    cli(
        c,
        "image-from-labels float32 integral label map",
        IFL(),
        expect="good",
        setup=lab_file(lambda p: save_nii(p, base.astype(np.float32))),
        check=good,
    )
    cli(
        c,
        "image-from-labels NRRD label map",
        IFL("{d}/lab.nrrd"),
        expect="good",
        setup=lab_file(lambda p: save_nrrd(p, base), "lab.nrrd"),
        check=good,
    )
    cli(
        c,
        "image-from-labels MetaImage .mha label map",
        IFL("{d}/lab.mha"),
        expect="good",
        setup=lab_file(lambda p: save_nrrd(p, base), "lab.mha"),
        check=good,
    )
    pv = np.moveaxis(np.eye(10, dtype=np.float32)[base], 0, 0)  # (X, Y, Z, 10): NIfTI channels last
    cli(
        c,
        "image-from-labels 4D partial volumes (10 channels)",
        IFL(),
        expect="good",
        setup=lab_file(lambda p: save_nii(p, pv)),
        check=good,
    )
    cli(
        c,
        "image-from-labels (X,Y,Z,1) label map",
        IFL(),
        expect="good",
        setup=lab_file(lambda p: save_nii(p, base[..., None])),
        check=good,
    )
    small = phantom_labels((40, 48, 40))
    aff1 = np.diag([4.0, 4.0, 4.0, 1.0])
    aff1[:3, 3] = [-78, -96, -78]
    cli(
        c,
        "image-from-labels label map on another grid (4 mm)",
        IFL(),
        expect="good",
        setup=lab_file(lambda p: save_nii(p, small, aff1)),
        check=good,
    )
    far = aff1.copy()
    far[:3, 3] += 5000
    cli(
        c,
        "image-from-labels off-grid labels --alignment centre",
        IFL("{d}/lab.nii.gz", "--alignment", "centre"),
        expect="good",
        setup=lab_file(lambda p: save_nii(p, small, far)),
        check=good,
    )
    cli(
        c,
        "image-from-labels off-grid labels --alignment world (no overlap)",
        IFL(),
        setup=lab_file(lambda p: save_nii(p, small, far)),
    )
    cli(
        c,
        "image-from-labels --sequence flair (lower case)",
        IFL("{d}/lab.nii.gz", "--sequence", "flair"),
        expect="good",
        setup=lab_file(lambda p: save_nii(p, base)),
        check=good,
    )
    cli(
        c,
        "image-from-labels all-background label map",
        IFL(),
        expect="either",
        setup=lab_file(lambda p: save_nii(p, np.zeros_like(base))),
        check=good,
    )
    cli(
        c,
        "image-from-labels 1x1x1 label map",
        IFL(),
        expect="either",
        setup=lab_file(lambda p: save_nii(p, np.ones((1, 1, 1), np.uint8))),
        check=good,
    )
    # ---- image-from-labels: bad label maps -----------------------------------------------------
    bad_arrays = {
        "complex64 label map": lambda: base.astype(np.complex64),
        "complex128 label map (imaginary parts)": lambda: base.astype(np.complex128) + 1j,
        "RGB24 label map (structured dtype)": lambda: np.zeros(
            base.shape, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")]
        ),
        "RGB (X,Y,Z,3) uint8": lambda: np.stack([base] * 3, axis=-1),
        "float label map with fractions": lambda: base.astype(np.float32) + 0.5,
        "negative label values": lambda: base.astype(np.int16) - 1,
        "label value 10 (outside the 0-9 schema)": lambda: np.where(base == 6, 10, base).astype(np.uint8),
        "label value 255": lambda: np.where(base == 6, 255, base).astype(np.uint8),
        "int64 label 2**40": lambda: np.where(base == 6, np.int64(2**40), base.astype(np.int64)),
        "NaN in a float label map": lambda: np.where(base == 6, np.nan, base).astype(np.float32),
        "inf in a float label map": lambda: np.where(base == 6, np.inf, base).astype(np.float32),
        "empty label map (0x4x4)": lambda: np.zeros((0, 4, 4), np.uint8),
        "2D label map": lambda: base[:, :, 30],
        "5D label map (X,Y,Z,2,2)": lambda: np.zeros((8, 8, 8, 2, 2), np.uint8),
        "partial volumes with 3 channels": lambda: np.eye(3, dtype=np.float32)[np.clip(base, 0, 2)],
        "partial volumes above 1": lambda: pv * 3.0,
        "partial volumes negative": lambda: pv - 0.5,
        "partial volumes with NaN": lambda: np.where(pv == 1, np.nan, pv).astype(np.float32),
    }
    for desc, make in bad_arrays.items():
        cli(c, f"image-from-labels {desc}", IFL(), setup=lab_file(lambda p, make=make: save_nii(p, make())))
    zero = np.zeros((4, 4))
    sing = DEMO_AFFINE.copy()
    sing[:, 2] = 0
    sing[3, 3] = 1
    nanaff = DEMO_AFFINE.copy()
    nanaff[0, 0] = np.nan
    infaff = DEMO_AFFINE.copy()
    infaff[1, 3] = np.inf
    for desc, aff in [
        ("zero affine", zero),
        ("singular affine (rank 2)", sing),
        ("NaN affine", nanaff),
        ("inf affine", infaff),
    ]:
        cli(
            c,
            f"image-from-labels label map with {desc}",
            IFL(),
            setup=lab_file(lambda p, aff=aff: nifti_with_sform(p, base, aff)),
        )
    tiny = DEMO_AFFINE.copy()
    tiny[:3, :3] *= 1e-6
    cli(
        c,
        "image-from-labels label map with 1e-6 mm voxels",
        IFL(),
        expect="either",
        setup=lab_file(lambda p: save_nii(p, base, tiny)),
        check=good,
    )

    def write_then(fn):
        def w(p):
            save_nii(p, base)
            fn(p)

        return w

    cli(c, "image-from-labels truncated .nii.gz", IFL(), setup=lab_file(write_then(lambda p: truncate(p, 0.5))))
    cli(
        c,
        "image-from-labels truncated .nii (header only)",
        IFL("{d}/lab.nii"),
        setup=lab_file(lambda p: (save_nii(p, base), truncate(p, 352 / p.stat().st_size)), "lab.nii"),
    )
    cli(
        c,
        "image-from-labels truncated NRRD",
        IFL("{d}/lab.nrrd"),
        setup=lab_file(lambda p: (save_nrrd(p, base), truncate(p, 0.6)), "lab.nrrd"),
    )
    cli(
        c,
        "image-from-labels NRRD with garbage header",
        IFL("{d}/lab.nrrd"),
        setup=lab_file(lambda p: p.write_bytes(b"NRRD0004\ntype: banana\ndimension: -3\n\n\x00\x01"), "lab.nrrd"),
    )
    cli(
        c,
        "image-from-labels NRRD with zero spacing",
        IFL("{d}/lab.nrrd"),
        setup=lab_file(
            lambda p: p.write_bytes(
                b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 4 4 4\nspacings: 0 0 0\nencoding: raw\n\n" + bytes(64)
            ),
            "lab.nrrd",
        ),
    )
    cli(
        c,
        "image-from-labels text file named .nii",
        IFL("{d}/lab.nii"),
        setup=lab_file(lambda p: p.write_text("not an image\n" * 50), "lab.nii"),
    )
    cli(c, "image-from-labels empty .nii.gz file", IFL(), setup=lab_file(lambda p: p.write_bytes(b"")))
    cli(c, "image-from-labels LABELS is a folder", IFL(), setup=lambda ctx: (ctx.d / "lab.nii.gz").mkdir())
    cli(c, "image-from-labels LABELS does not exist", IFL("{d}/missing.nii.gz"))
    cli(c, "image-from-labels LABELS missing, name with a newline (one-line error?)", IFL("{d}/miss\ning.nii.gz"))
    cli(
        c,
        "image-from-labels LABELS without extension",
        IFL("{d}/lab"),
        setup=lab_file(
            lambda p: save_nii(p.with_suffix(".nii"), base) and p.write_bytes((p.with_suffix(".nii")).read_bytes()),
            "lab",
        ),
    )
    cli(
        c,
        "image-from-labels LABELS is a symlink loop",
        IFL(),
        setup=lambda ctx: (ctx.d / "lab.nii.gz").symlink_to(ctx.d / "lab.nii.gz"),
    )
    cli(c, "image-from-labels LABELS is /dev/zero", IFL("/dev/zero"))
    cli(
        c,
        "image-from-labels NRRD detached header reading /etc/passwd",
        IFL("{d}/lab.nhdr"),
        setup=lab_file(
            lambda p: p.write_bytes(
                b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 8 8 8\nencoding: raw\ndata file: /etc/passwd\n\n"
            ),
            "lab.nhdr",
        ),
    )
    cli(
        c,
        "image-from-labels NIfTI header bomb 32767^3 float64 (.nii)",
        IFL("{d}/lab.nii"),
        setup=lab_file(lambda p: nifti_header_bomb(p, (32767,) * 3, np.float64), "lab.nii"),
    )
    cli(
        c,
        "image-from-labels NIfTI header bomb 32767^3 uint8 (.nii.gz)",
        IFL(),
        setup=lab_file(lambda p: nifti_header_bomb(p, (32767,) * 3, np.uint8, gz=True)),
    )
    cli(
        c,
        "image-from-labels NIfTI header bomb 2048x2048x1024 uint8 (.nii.gz, 4 GB)",
        IFL(),
        setup=lab_file(lambda p: nifti_header_bomb(p, (2048, 2048, 1024), np.uint8, gz=True)),
    )
    cli(
        c,
        "image-from-labels NRRD header bomb 30000^3",
        IFL("{d}/lab.nrrd"),
        setup=lab_file(
            lambda p: p.write_bytes(
                b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 30000 30000 30000\nencoding: raw\n\n" + bytes(100)
            ),
            "lab.nrrd",
        ),
    )

    def hdr_edit(field, value):
        return lambda img: img.header.__setitem__(field, value)

    cli(
        c,
        "image-from-labels NIfTI with bogus datatype code 255",
        IFL(),
        setup=lab_file(lambda p: (save_nii(p, base), _patch_nifti(p, "datatype", 255))),
    )
    cli(
        c,
        "image-from-labels NIfTI with dim[0]=8",
        IFL(),
        setup=lab_file(lambda p: (save_nii(p, base), _patch_nifti(p, "dim0", 8))),
    )
    cli(
        c,
        "image-from-labels NIfTI with negative dimension",
        IFL(),
        setup=lab_file(lambda p: (save_nii(p, base), _patch_nifti(p, "dim1", -64))),
    )
    cli(
        c,
        "image-from-labels NIfTI with vox_offset past the end",
        IFL(),
        setup=lab_file(lambda p: (save_nii(p, base), _patch_nifti(p, "vox_offset", 1e9))),
    )
    cli(
        c,
        "image-from-labels NIfTI with scl_slope 0.5 (fractions after scaling)",
        IFL(),
        setup=lab_file(
            lambda p: save_nii(p, base.astype(np.int16), header_edit=lambda img: img.header.set_slope_inter(0.5, 0))
        ),
    )
    # ---- options ---------------------------------------------------------------------------------
    for v in ["PD", "", "T1 FLAIR"]:
        cli(
            c,
            f"image-from-labels --sequence {v!r}",
            IFL("{d}/lab.nii.gz", f"--sequence={v}"),
            setup=lab_file(lambda p: save_nii(p, base)),
        )
    cli(
        c,
        "image-from-labels --sequence 't1\\n' (whitespace)",
        IFL("{d}/lab.nii.gz", "--sequence=t1\n"),
        expect="either",
        setup=lab_file(lambda p: save_nii(p, base)),
        check=good,
    )
    for v in ["left", "", "CENTRE"]:
        cli(
            c,
            f"image-from-labels --alignment {v!r}",
            IFL("{d}/lab.nii.gz", f"--alignment={v}"),
            setup=lab_file(lambda p: save_nii(p, base)),
        )
    cli(
        c,
        "image-from-labels --steps 2 (SPADE GAN takes none)",
        IFL("{d}/lab.nii.gz", "--steps", "2"),
        setup=lab_file(lambda p: save_nii(p, base)),
    )
    cli(
        c,
        "image-from-labels --sampler ddim (SPADE GAN takes none)",
        IFL("{d}/lab.nii.gz", "--sampler", "ddim"),
        setup=lab_file(lambda p: save_nii(p, base)),
    )
    cli(
        c,
        "image-from-labels --model brain-ldm-demo (wrong kind)",
        ["image-from-labels", "{d}/lab.nii.gz", "--model", "brain-ldm-demo", "--quiet", "-o", "out.nii.gz"],
        setup=lab_file(lambda p: save_nii(p, base)),
    )
    cli(
        c,
        "image-from-labels -o <the input file itself>",
        IFL(out="lab.nii.gz"),
        setup=lab_file(lambda p: save_nii(p, base)),
    )


def _patch_nifti(path: Path, field: str, value) -> None:
    """Edit one field of a (gzipped) NIfTI-1 header in place, bypassing nibabel's checks."""
    import struct

    gz = str(path).endswith(".gz")
    raw = bytearray(gzip.decompress(path.read_bytes()) if gz else path.read_bytes())
    if field == "datatype":
        struct.pack_into("<h", raw, 70, value)
    elif field.startswith("dim"):
        struct.pack_into("<h", raw, 40 + 2 * int(field[3:]), value)
    elif field == "vox_offset":
        struct.pack_into("<f", raw, 108, value)
    path.write_bytes(gzip.compress(bytes(raw)) if gz else bytes(raw))


# ==============================================================================================
# 3. models: import, cards, checkpoints, bundles
# ==============================================================================================
def GENF(model: str = "{d}/model", *extra, preview: bool = True) -> list:
    return [
        "generate",
        "--model",
        model,
        "--seed",
        "1",
        *(["--preview-steps", "2"] if preview else []),
        "--quiet",
        "-o",
        "out.nii.gz",
        *extra,
    ]


def sub(d: dict, path: str, value) -> dict:
    """Set ``d['a']['b'] = value`` for path 'a.b'; ``value`` DEL removes the key."""
    keys = path.split(".")
    cur = d
    for k in keys[:-1]:
        cur = cur[k]
    if value is DEL:
        cur.pop(keys[-1], None)
    else:
        cur[keys[-1]] = value
    return d


DEL = object()


def ae(card, key, value):
    return sub(card, f"networks.autoencoder.kwargs.{key}", value)


def unet(card, key, value):
    return sub(card, f"networks.diffusion.kwargs.{key}", value)


def define_models() -> None:
    c = "models"
    # ---- card mutations, used in place (generate --model <folder>) ---------------------------
    mutations: list[tuple[str, Callable | None, Any, dict]] = [
        ("autoencoder channels [80000]*3", lambda k: ae(k, "channels", [80000] * 3), None, {}),
        ("diffusion channels [65536]*3", lambda k: unet(k, "channels", [65536] * 3), None, {}),
        (
            "latent.shape [8, 100000, 100000, 100000]",
            lambda k: sub(k, "latent.shape", [8, 100000, 100000, 100000]),
            None,
            {},
        ),
        (
            "latent.shape [8, 1, 1, 1] (does not decode to the output grid)",
            lambda k: sub(k, "latent.shape", [8, 1, 1, 1]),
            None,
            {},
        ),
        ("num_train_timesteps 10**13", lambda k: sub(k, "scheduler.kwargs.num_train_timesteps", 10**13), None, {}),
        (
            "num_train_timesteps = max_steps = default_steps = 10**9 (default steps run)",
            lambda k: (
                sub(k, "scheduler.kwargs.num_train_timesteps", 10**9),
                sub(k, "sampling.max_steps", 10**9),
                sub(k, "sampling.default_steps", 10**9),
            ),
            None,
            {"preview": False, "timeout": 120},
        ),
        (
            "default_steps 10**6 with max_steps 10**6 > num_train_timesteps 1000",
            lambda k: (sub(k, "sampling.max_steps", 10**6), sub(k, "sampling.default_steps", 10**6)),
            None,
            {"preview": False, "timeout": 120},
        ),
        ("norm_eps as a string '1e-6'", lambda k: ae(k, "norm_eps", "1e-6"), None, {}),
        (
            "norm_eps a '$...' expression",
            lambda k: ae(k, "norm_eps", f"$__import__('os').system('touch {marker('dollar-norm-eps')}') or 1e-6"),
            None,
            {},
        ),
        ("spatial_dims 7", lambda k: ae(k, "spatial_dims", 7), None, {}),
        ("spatial_dims '3' (string)", lambda k: ae(k, "spatial_dims", "3"), None, {}),
        ("norm_num_groups 7 (channels not divisible)", lambda k: ae(k, "norm_num_groups", 7), None, {}),
        ("with_conditioning 'yes' (string for a bool)", lambda k: unet(k, "with_conditioning", "yes"), None, {}),
        ("missing 'networks'", lambda k: sub(k, "networks", DEL), None, {}),
        ("missing 'output'", lambda k: sub(k, "output", DEL), None, {}),
        ("missing 'conditioning'", lambda k: sub(k, "conditioning", DEL), None, {}),
        ("scheduler without kwargs", lambda k: sub(k, "scheduler.kwargs", DEL), None, {}),
        ("schema_version 2", lambda k: sub(k, "schema_version", 2), None, {}),
        ("schema_version true", lambda k: sub(k, "schema_version", True), None, {}),
        (
            "id with a newline (one-line error?)",
            lambda k: (sub(k, "id", "evil\nid"), sub(k, "kind", "nonsense")),
            None,
            {},
        ),
        ("id '../../evil'", lambda k: sub(k, "id", "../../evil"), None, {}),
        ("kind 'bogus'", lambda k: sub(k, "kind", "bogus"), None, {}),
        ("card JSON is a list", None, "[1, 2, 3]", {}),
        ("card JSON is a string", None, '"brain-ldm-demo"', {}),
        ("card JSON is null", None, "null", {}),
        ("card JSON nested 200000 deep", None, deep_json(), {}),
        ("card JSON nested dict 100000 deep", None, '{"a":' * 100000 + "1" + "}" * 100000, {}),
        (
            "card.json not UTF-8",
            None,
            (SHIPPED / "brain-ldm-demo" / "card.json")
            .read_bytes()
            .replace(b"Small conditional", b"Sm\xe9ll conditional"),
            {},
        ),
        ("card.json empty", None, b"", {}),
        (
            "card.json with UTF-8 BOM",
            None,
            b"\xef\xbb\xbf" + (SHIPPED / "brain-ldm-demo" / "card.json").read_bytes(),
            {},
        ),
        (
            "weights file '../autoencoder.safetensors'",
            lambda k: sub(k, "weights.autoencoder.file", "../autoencoder.safetensors"),
            None,
            {},
        ),
        ("weights file '/etc/passwd'", lambda k: sub(k, "weights.autoencoder.file", "/etc/passwd"), None, {}),
        (
            "weights file with NUL 'auto\\x00encoder.safetensors'",
            lambda k: sub(k, "weights.autoencoder.file", "auto\x00encoder.safetensors"),
            None,
            {},
        ),
        ("weights file ''", lambda k: sub(k, "weights.autoencoder.file", ""), None, {}),
        ("weights file '..'", lambda k: sub(k, "weights.autoencoder.file", ".."), None, {}),
        ("network class 'os.system'", lambda k: sub(k, "networks.autoencoder.class", "os.system"), None, {}),
        ("network kwargs with '_target_'", lambda k: ae(k, "_target_", "os.system"), None, {}),
        (
            "samplers ['pndm'] for a v-prediction model",
            lambda k: (sub(k, "sampling.samplers", ["pndm"]), sub(k, "sampling.default_sampler", "pndm")),
            None,
            {},
        ),
        ("output.affine all zeros", lambda k: sub(k, "output.affine", [[0, 0, 0, 0]] * 3 + [[0, 0, 0, 1]]), None, {}),
        (
            "condition range [82, 45] (decreasing)",
            lambda k: sub(
                k,
                "conditioning.variables",
                [dict(v, range=[82.0, 45.0]) if v["name"] == "age" else v for v in k["conditioning"]["variables"]],
            ),
            None,
            {},
        ),
        ("cross_attention_dim 5 (4 variables)", lambda k: unet(k, "cross_attention_dim", 5), None, {}),
        (
            "two weights name the same file",
            lambda k: sub(k, "weights.diffusion.file", "autoencoder.safetensors"),
            None,
            {},
        ),
        (
            "sha256 in upper case",
            lambda k: sub(k, "weights.autoencoder.sha256", k["weights"]["autoencoder"]["sha256"].upper()),
            None,
            {},
        ),
        ("sha256 of other weights (mismatch)", lambda k: sub(k, "weights.autoencoder.sha256", "0" * 64), None, {}),
        ("latent scale_factor 1e-300 (decoder gets inf)", lambda k: sub(k, "latent.scale_factor", 1e-300), None, {}),
        (
            "spacing 1e999 (JSON Infinity)",
            None,
            (SHIPPED / "brain-ldm-demo" / "card.json")
            .read_text()
            .replace('"spacing": [\n      2.5,', '"spacing": [\n      1e999,'),
            {},
        ),
        (
            "conditioning with no variables (in_channels mismatch)",
            lambda k: sub(k, "conditioning.variables", []),
            None,
            {},
        ),
    ]
    for desc, edit, raw, opts in mutations:
        cli(
            c,
            f"generate --model <folder: {desc}>",
            GENF(preview=opts.get("preview", True)),
            timeout=opts.get("timeout", DEFAULT_TIMEOUT),
            setup=lambda ctx, edit=edit, raw=raw: model_folder(ctx, edit=edit, raw=raw),
        )
    # symlinked / special weight files in a folder model without checksums
    cli(
        c,
        "generate --model <folder: autoencoder weights symlink to /etc/passwd, no checksums>",
        GENF(),
        setup=lambda ctx: (
            model_folder(ctx, strip_checksums=True),
            (ctx.d / "model" / "autoencoder.safetensors").unlink(),
            (ctx.d / "model" / "autoencoder.safetensors").symlink_to("/etc/passwd"),
        ),
    )
    cli(
        c,
        "generate --model <folder: weights symlink loop>",
        GENF(),
        setup=lambda ctx: (
            model_folder(ctx, strip_checksums=True),
            (ctx.d / "model" / "autoencoder.safetensors").unlink(),
            (ctx.d / "model" / "autoencoder.safetensors").symlink_to(ctx.d / "model" / "autoencoder.safetensors"),
        ),
    )
    cli(
        c,
        "generate --model <folder: weights is a FIFO>",
        GENF(),
        setup=lambda ctx: (
            model_folder(ctx, strip_checksums=True),
            (ctx.d / "model" / "autoencoder.safetensors").unlink(),
            os.mkfifo(ctx.d / "model" / "autoencoder.safetensors"),
        ),
    )
    cli(
        c,
        "generate --model <folder: NaN weights, no checksums>",
        GENF(),
        setup=lambda ctx: model_folder(
            ctx,
            strip_checksums=True,
            weights=lambda d: perturbed_weights(
                SHIPPED / "brain-ldm-demo" / "diffusion.safetensors", d / "diffusion.safetensors", fill=float("nan")
            ),
        ),
    )

    # ---- pickle payloads in .pt files ------------------------------------------------------------
    def pt_card(k):
        for w in k["weights"].values():
            for key in ("sha256", "md5", "size_bytes"):
                w.pop(key, None)
            w["format"] = "auto"
        k["weights"]["diffusion"]["file"] = "diffusion.pt"
        k["id"] = "payload-model"
        return k

    for kind in ("zip", "zip-state-dict", "legacy", "raw", "raw-eval"):
        name = f"payload-folder-{kind}"
        cli(
            c,
            f"generate --model <folder with pickle payload diffusion.pt ({kind})>",
            GENF(),
            setup=lambda ctx, kind=kind, name=name: model_folder(
                ctx, edit=pt_card, weights=lambda d: write_payload(d / "diffusion.pt", kind, name)
            ),
        )
    for kind, ext in (
        ("zip", ".pt"),
        ("legacy", ".pth"),
        ("raw", ".ckpt"),
        ("raw-eval", ".bin"),
        ("zip-state-dict", ".pt"),
    ):
        name = f"payload-import-{kind}{ext}"
        cli(
            c,
            f"models import <pickle payload{ext} ({kind})> --model brain-ldm-demo --component diffusion "
            "--allow-unverified",
            [
                "models",
                "import",
                f"{{d}}/evil{ext}",
                "--model",
                "brain-ldm-demo",
                "--component",
                "diffusion",
                "--allow-unverified",
            ],
            setup=lambda ctx, kind=kind, ext=ext, name=name: write_payload(ctx.d / f"evil{ext}", kind, name),
        )
    cli(
        c,
        "models import <pickle payload saved as .safetensors> --allow-unverified",
        [
            "models",
            "import",
            "{d}/evil.safetensors",
            "--model",
            "brain-ldm-demo",
            "--component",
            "diffusion",
            "--allow-unverified",
        ],
        setup=lambda ctx: write_payload(ctx.d / "evil.safetensors", "raw", "payload-as-safetensors"),
    )
    # ---- single-checkpoint imports --------------------------------------------------------------
    D = SHIPPED / "brain-ldm-demo" / "diffusion.safetensors"

    def imp(path: str, *extra) -> list:
        return ["models", "import", path, "--model", "brain-ldm-demo", "--component", "diffusion", *extra]

    ckpts: list[tuple[str, Callable[[Path], Any], tuple]] = [
        ("truncated safetensors", lambda p: (shutil.copy(D, p), truncate(p, 0.5)), ()),
        (
            "safetensors with wrong keys",
            lambda p: perturbed_weights(D, p, edit=lambda t: {("x." + k): v for k, v in t.items()}),
            (),
        ),
        (
            "safetensors with a missing key",
            lambda p: perturbed_weights(D, p, edit=lambda t: dict(list(t.items())[1:])),
            (),
        ),
        (
            "safetensors with an extra key",
            lambda p: perturbed_weights(D, p, edit=lambda t: {**t, "extra.weight": t[next(iter(t))].clone()}),
            (),
        ),
        (
            "safetensors with a wrong shape",
            lambda p: perturbed_weights(
                D,
                p,
                edit=lambda t: {
                    k: (v.reshape(-1)[:-1].contiguous() if i == 0 else v) for i, (k, v) in enumerate(t.items())
                },
            ),
            (),
        ),
        ("empty safetensors (no tensors)", lambda p: p.write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}"), ()),
        (
            "safetensors with a 2**62-byte header length",
            lambda p: p.write_bytes((2**62).to_bytes(8, "little") + b"{}"),
            (),
        ),
        (
            "safetensors header claiming a 10**15-element tensor",
            lambda p: p.write_bytes(
                _st_header({"w": {"dtype": "F32", "shape": [10**5] * 3, "data_offsets": [0, 4 * 10**15]}})
            ),
            (),
        ),
        ("safetensors with a non-JSON header", lambda p: p.write_bytes((16).to_bytes(8, "little") + b"\xff" * 16), ()),
        ("text file named .pt", lambda p: p.write_text("this is not a checkpoint\n"), ()),
        ("empty .pt", lambda p: p.write_bytes(b""), ()),
        ("truncated .pt (zip)", lambda p: (_torch_save_state(D, p), truncate(p, 0.5)), ()),
        ("safetensors bytes named .pt", lambda p: shutil.copy(D, p), ()),
        (".pt holding a list of tensors", lambda p: _torch_save(p, "list"), ()),
        (".pt holding a dict of ints", lambda p: _torch_save(p, "ints"), ()),
        (".pt holding a tensor wrapped 5 dicts deep", lambda p: _torch_save(p, "deep", D), ()),
        ("other weights of the right shape, no --allow-unverified", lambda p: perturbed_weights(D, p), ()),
    ]
    for desc, make, extra in ckpts:
        ext = ".pt" if ".pt" in desc else ".safetensors"
        cli(
            c,
            f"models import <{desc}> --model brain-ldm-demo --component diffusion"
            + (" --allow-unverified" if "allow" not in desc else ""),
            imp(f"{{d}}/ckpt{ext}", *([] if "no --allow-unverified" in desc else ["--allow-unverified"])),
            setup=lambda ctx, make=make, ext=ext: make(ctx.d / f"ckpt{ext}"),
        )
    cli(
        c,
        "models import <checkpoint> without --model",
        ["models", "import", "{d}/ckpt.safetensors"],
        setup=lambda ctx: shutil.copy(D, ctx.d / "ckpt.safetensors"),
    )
    cli(
        c,
        "models import <checkpoint> --model brain-ldm-demo without --component (2 weights)",
        ["models", "import", "{d}/ckpt.safetensors", "--model", "brain-ldm-demo"],
        setup=lambda ctx: shutil.copy(D, ctx.d / "ckpt.safetensors"),
    )
    cli(
        c,
        "models import <checkpoint> --component bogus",
        imp("{d}/ckpt.safetensors", "--component", "bogus"),
        setup=lambda ctx: shutil.copy(D, ctx.d / "ckpt.safetensors"),
    )
    cli(
        c,
        "models import <checkpoint> --model no-such-model",
        ["models", "import", "{d}/ckpt.safetensors", "--model", "no-such-model", "--component", "diffusion"],
        setup=lambda ctx: shutil.copy(D, ctx.d / "ckpt.safetensors"),
    )
    cli(
        c,
        "models import <FIFO> (must not hang)",
        imp("{d}/fifo.pt", "--allow-unverified"),
        setup=lambda ctx: os.mkfifo(ctx.d / "fifo.pt"),
        timeout=60,
    )
    cli(c, "models import /dev/zero (must not hang)", imp("/dev/zero", "--allow-unverified"), timeout=60)
    cli(c, "models import /etc/passwd", imp("/etc/passwd", "--allow-unverified"))
    cli(c, "models import <does not exist>", ["models", "import", "{d}/nothing"])
    cli(c, "models import / (root folder)", ["models", "import", "/"])
    cli(c, "models import <path with a newline, missing> (one-line error?)", ["models", "import", "{d}/no\nthing"])
    cli(
        c,
        "models import <shipped folder brain-ldm-demo> (its own card)",
        ["models", "import", str(SHIPPED / "brain-ldm-demo")],
        expect="either",
    )

    # ---- bad cards through models import ---------------------------------------------------------
    for desc, edit, raw in [
        ("norm_eps as a string", lambda k: (sub(k, "id", "my-model"), ae(k, "norm_eps", "1e-6")), None),
        ("autoencoder channels [80000]*3", lambda k: (sub(k, "id", "my-model"), ae(k, "channels", [80000] * 3)), None),
        (
            "latent.shape huge",
            lambda k: (sub(k, "id", "my-model"), sub(k, "latent.shape", [8, 100000, 100000, 100000])),
            None,
        ),
        (
            "num_train_timesteps 10**13",
            lambda k: (sub(k, "id", "my-model"), sub(k, "scheduler.kwargs.num_train_timesteps", 10**13)),
            None,
        ),
        ("JSON nested 200000 deep", None, deep_json()),
        ("card.json not UTF-8", None, b'{"id": "caf\xe9"}'),
        ("JSON is a list", None, "[]"),
        ("id with a newline", lambda k: (sub(k, "id", "my\nmodel"), sub(k, "kind", "x")), None),
        (
            "kwargs value '$...' expression",
            lambda k: (
                sub(k, "id", "my-model"),
                unet(k, "num_res_blocks", f"$__import__('os').system('touch {marker('dollar-import')}')"),
            ),
            None,
        ),
        (
            "missing weights files",
            lambda k: (
                sub(k, "id", "my-model"),
                sub(k, "weights.autoencoder.file", "nope.safetensors"),
                sub(k, "weights.diffusion.file", "nope2.safetensors"),
            ),
            None,
        ),
    ]:
        cli(
            c,
            f"models import <folder: {desc}>",
            ["models", "import", "{d}/model"],
            setup=lambda ctx, edit=edit, raw=raw: model_folder(ctx, edit=edit, raw=raw),
        )
    cli(
        c,
        "models import <folder: new id my-demo, no checksums> (valid custom model)",
        ["models", "import", "{d}/model"],
        expect="good",
        setup=lambda ctx: model_folder(ctx, strip_checksums=True, edit=lambda k: sub(k, "id", "my-demo")),
        check=lambda ctx, run: (
            None if (ctx.home / "models" / "my-demo" / "install.json").is_file() else "install.json not written"
        ),
    )
    cli(
        c,
        "models import <card.json path of a valid custom model>",
        ["models", "import", "{d}/model/card.json"],
        expect="good",
        setup=lambda ctx: model_folder(ctx, strip_checksums=True, edit=lambda k: sub(k, "id", "my-demo")),
    )
    # ---- --home ----------------------------------------------------------------------------------
    custom = lambda ctx: model_folder(ctx, strip_checksums=True, edit=lambda k: sub(k, "id", "my-demo"))  # noqa: E731
    cli(
        c,
        "models import --home <a file>",
        ["models", "import", "{d}/model"],
        home="{d}/homefile",
        setup=lambda ctx: (custom(ctx), (ctx.d / "homefile").write_text("x")),
    )
    cli(
        c,
        "models import --home /proc/synthbrain-home",
        ["models", "import", "{d}/model"],
        home="/proc/synthbrain-home",
        setup=custom,
    )
    cli(
        c,
        "models import --home /sys/synthbrain-home",
        ["models", "import", "{d}/model"],
        home="/sys/synthbrain-home",
        setup=custom,
    )
    cli(
        c,
        "models list --home <a file>",
        ["models", "list"],
        expect="either",
        home="{d}/homefile",
        setup=lambda ctx: (ctx.d / "homefile").write_text("x"),
    )
    cli(
        c,
        "models verify --home <a file>",
        ["models", "verify"],
        expect="either",
        home="{d}/homefile",
        setup=lambda ctx: (ctx.d / "homefile").write_text("x"),
    )
    # ---- models misc -----------------------------------------------------------------------------
    cli(c, "models list", ["models", "list"], expect="good")
    cli(c, "models path", ["models", "path"], expect="good")
    cli(c, "models path brain-ldm-demo", ["models", "path", "brain-ldm-demo"], expect="good")
    cli(c, "models verify", ["models", "verify"], expect="good")
    cli(c, "models path ../../etc", ["models", "path", "../../etc"])
    cli(c, "models verify no-such-model", ["models", "verify", "no-such-model"])
    cli(c, "models download no-such-model", ["models", "download", "no-such-model"])
    cli(c, "models download brainspade3d-image (not public)", ["models", "download", "brainspade3d-image"])
    cli(
        c,
        "models download labels-demo (shipped: nothing to do)",
        ["models", "download", "labels-demo"],
        expect="either",
    )
    cli(c, "models frobnicate", ["models", "frobnicate"])

    def damaged_install(content: bytes):
        def setup(ctx):
            f = ctx.home / "models" / "brain-ldm-demo"
            f.mkdir(parents=True)
            (f / "install.json").write_bytes(content)

        return setup

    def shipped_weights_used(ctx: Ctx, run: Run):
        """A damaged cache entry for a shipped id gives way to the verified shipped copy (not to the cache)."""
        problem = check_volume("out.nii.gz")(ctx, run)
        if problem:
            return problem
        rec = sidecar(ctx.d / "out.json") or {}
        used = {k: v.get("sha256") for k, v in (rec.get("weights") or {}).items()}
        locations = {v.get("location") for v in (rec.get("weights") or {}).values()}
        if used != SHIPPED_SHA["brain-ldm-demo"] or locations != {"shipped"}:
            return f"weights used: {used} from {locations}, not the shipped copy"
        return None

    for desc, content in [
        ("a list", b"[1]"),
        ("not UTF-8", b'{"weights": "\xff"}'),
        ("nested 200000 deep", deep_json().encode()),
        ("weights: entries missing fields", b'{"weights": {"diffusion": {"file": "x"}}}'),
    ]:
        cli(
            c,
            f"generate with cache install.json that is {desc} (the shipped copy runs)",
            GEN(),
            expect="good",
            setup=damaged_install(content),
            check=shipped_weights_used,
        )

    # ---- model-id takeover -------------------------------------------------------------------------
    define_takeover(c)
    # ---- MONAI bundles -------------------------------------------------------------------------------
    define_bundles(c)


def _st_header(header: dict) -> bytes:
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + b"\x00" * 16


def _torch_save_state(src: Path, dst: Path) -> None:
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(str(src)), str(dst))


def _torch_save(p: Path, what: str, src: Path | None = None) -> None:
    import torch

    if what == "list":
        torch.save([torch.zeros(3), torch.ones(2)], str(p))
    elif what == "ints":
        torch.save({"a": 1, "b": 2}, str(p))
    elif what == "deep":
        from safetensors.torch import load_file

        data: Any = load_file(str(src))
        for _ in range(5):
            data = {"state_dict": data}
        torch.save(data, str(p))


def perturbed_folder(ctx: Ctx, src: str, name: str, seed: int, card_edit: Callable | None = None) -> Path:
    """A copy of shipped model ``src`` whose weights are all different (perturbed), card without checksums."""

    def weights(d: Path):
        for f in d.glob("*.safetensors"):
            perturbed_weights(SHIPPED / src / f.name, f, seed=seed, scale=0.2)

    return model_folder(ctx, src=src, name=name, strip_checksums=True, edit=card_edit, weights=weights)


def generate_weights(ctx: Ctx, out: str, model: str = "brain-ldm-demo") -> tuple[Run, dict | None]:
    if model == "labels-demo":
        args = [
            "--home",
            str(ctx.home),
            "labels",
            "--model",
            model,
            "--seed",
            "7",
            "--preview-steps",
            "2",
            "--quiet",
            "-o",
            out,
        ]
    else:
        args = [
            "--home",
            str(ctx.home),
            "generate",
            "--model",
            model,
            "--seed",
            "7",
            "--preview-steps",
            "2",
            "--quiet",
            "-o",
            out,
        ]
    run = run_cli(args, ctx.d)
    side = sidecar(ctx.d / out.replace(".nii.gz", ".json"))
    return run, (side or {}).get("weights")


def define_takeover(c: str) -> None:
    """A folder whose card claims a shipped/built-in id with other weights: the import must be refused,
    and ``generate --model <that id>`` must keep using the verified weights."""

    def takeover(
        src: str, claimed: str, extra: tuple = (), self_checksums: str | None = None, card_edit: Callable | None = None
    ):
        def fn(ctx: Ctx):
            def edit(k):
                k["id"] = claimed
                if card_edit:
                    card_edit(k)
                return k

            folder = perturbed_folder(ctx, src, "evil", seed=11, card_edit=edit)
            if self_checksums:  # checksums of the evil weights themselves
                card = json.loads((folder / "card.json").read_text())
                for w in card["weights"].values():
                    w[self_checksums] = hashlib.new(self_checksums, (folder / w["file"]).read_bytes()).hexdigest()
                (folder / "card.json").write_text(json.dumps(card, indent=1))
            before = snapshot(watched(ctx))
            run = run_cli(["--home", str(ctx.home), "models", "import", str(folder), *extra], ctx.d)
            diff = changes(before, snapshot(watched(ctx)))
            out, det = judge("bad", run, diff, ctx)
            records = [("import", out, det)]
            if claimed in SHIPPED_SHA:
                run2, weights = generate_weights(ctx, "after.nii.gz", claimed)
                if run2.rc == 0 and weights is not None:
                    used = {k: v.get("sha256") for k, v in weights.items()}
                    if used != SHIPPED_SHA[claimed]:
                        records.append(
                            (
                                "then generate --model " + claimed,
                                BROKEN,
                                short(
                                    f"model-id takeover: {claimed} now runs other weights (sha256 "
                                    f"{', '.join(f'{k} {v[:12]}' for k, v in used.items())}; "
                                    f"checksum recorded {[v.get('checksum') for v in weights.values()]}) "
                                    "instead of the shipped, checksummed ones"
                                ),
                            )
                        )
                    else:
                        records.append(
                            (
                                "then generate --model " + claimed,
                                OK_ACCEPT,
                                "still runs the shipped weights (sha256 match the card)",
                            )
                        )
                elif run2.rc == 2 and "Traceback" not in run2.stderr:
                    records.append(
                        (
                            "then generate --model " + claimed,
                            BROKEN if out == BROKEN else OK_REJECT,
                            short(
                                ("refused (the import broke the shipped model): " if out == BROKEN else "")
                                + lines_of(run2.stderr)[0]
                            ),
                        )
                    )
                else:
                    records.append(
                        ("then generate --model " + claimed, BROKEN, short(f"exit {run2.rc} | " + evidence(run2)))
                    )
            elif out == BROKEN:
                installed = ctx.home / "models" / claimed / "install.json"
                records[0] = (
                    "import",
                    BROKEN,
                    det + (f" | {installed.name} written under built-in id {claimed}" if installed.is_file() else ""),
                )
            return records

        return fn

    add(
        c,
        "model-id takeover: folder card id brain-ldm-demo, other weights, no checksums",
        takeover("brain-ldm-demo", "brain-ldm-demo"),
    )
    add(
        c,
        "model-id takeover: folder card id brain-ldm-demo, other weights, sha256 of the other weights",
        takeover("brain-ldm-demo", "brain-ldm-demo", self_checksums="sha256"),
    )
    add(
        c,
        "model-id takeover: card id brain-ldm-demo, other weights, --model brain-ldm-demo",
        takeover("brain-ldm-demo", "brain-ldm-demo", extra=("--model", "brain-ldm-demo")),
    )
    add(
        c,
        "model-id takeover: card id brain-ldm-demo, other weights, --allow-unverified",
        takeover("brain-ldm-demo", "brain-ldm-demo", extra=("--allow-unverified",)),
    )
    add(
        c,
        "model-id takeover: card id brain-ldm-demo, other weights, other card version",
        takeover("brain-ldm-demo", "brain-ldm-demo", card_edit=lambda k: k.update(version="9.9.9")),
    )
    add(
        c,
        "model-id takeover: folder card id labels-demo, other weights, no checksums",
        takeover("labels-demo", "labels-demo"),
    )
    add(
        c,
        "model-id takeover: folder card id brain-ldm (built-in), demo-size networks, no checksums",
        takeover("brain-ldm-demo", "brain-ldm"),
    )
    add(
        c,
        "model-id takeover: folder card id brain-ldm (built-in), md5 of its own weights",
        takeover("brain-ldm-demo", "brain-ldm", self_checksums="md5"),
    )

    def renamed(ctx: Ctx):
        """A folder claiming brain-ldm-demo imported under a new id (--model my-copy): fine, and brain-ldm-demo
        must be unchanged."""
        folder = perturbed_folder(ctx, "brain-ldm-demo", "evil", seed=12)
        before = snapshot(watched(ctx))
        run = run_cli(["--home", str(ctx.home), "models", "import", str(folder), "--model", "my-copy"], ctx.d)
        diff = changes(before, snapshot(watched(ctx)))
        out, det = judge("either", run, diff, ctx)
        recs = [("import --model my-copy", out, det)]
        run2, weights = generate_weights(ctx, "after.nii.gz", "brain-ldm-demo")
        used = {k: v.get("sha256") for k, v in (weights or {}).items()}
        recs.append(
            (
                "then generate --model brain-ldm-demo",
                OK_ACCEPT if run2.rc == 0 and used == SHIPPED_SHA["brain-ldm-demo"] else BROKEN,
                "shipped weights used"
                if used == SHIPPED_SHA["brain-ldm-demo"]
                else short(f"exit {run2.rc}; weights {used} | {evidence(run2)}"),
            )
        )
        return recs

    add(c, "folder card id brain-ldm-demo imported under a new id (--model my-copy)", renamed)

    def single_ckpt(allow: bool):
        def fn(ctx: Ctx):
            other = perturbed_weights(
                SHIPPED / "brain-ldm-demo" / "diffusion.safetensors", ctx.d / "mine.safetensors", seed=5
            )
            before = snapshot(watched(ctx))
            run = run_cli(
                [
                    "--home",
                    str(ctx.home),
                    "models",
                    "import",
                    str(other),
                    "--model",
                    "brain-ldm-demo",
                    "--component",
                    "diffusion",
                    *(["--allow-unverified"] if allow else []),
                ],
                ctx.d,
            )
            diff = changes(before, snapshot(watched(ctx)))
            # Refused with or without --allow-unverified: brain-ldm-demo is a complete shipped model,
            # used in place; other weights belong under an id of their own (issue 11: a taken name
            # is refused, or the weights are imported under a new id).
            out, det = judge("bad", run, diff, ctx)
            recs = [("import" + (" --allow-unverified" if allow else ""), out, det)]
            if not allow:
                return recs
            run2, weights = generate_weights(ctx, "after.nii.gz")
            rec = (weights or {}).get("diffusion", {})
            if run2.rc == 0 and rec.get("sha256") == SHIPPED_SHA["brain-ldm-demo"]["diffusion"] and run.rc == 2:
                recs.append(("then generate", OK_ACCEPT, "the refused weights are nowhere: the shipped weights run"))
            elif run2.rc == 0 and rec.get("sha256") == SHIPPED_SHA["brain-ldm-demo"]["diffusion"]:
                recs.append(
                    (
                        "then generate",
                        BROKEN,
                        short(
                            "the import said OK (exit 0, and printed the shipped file as installed) but its "
                            "weights are never used: "
                            f"generate runs the shipped diffusion weights ({rec.get('location')}, "
                            f"{rec.get('checksum')}); "
                            "--allow-unverified weights for a shipped id are accepted, copied into the cache "
                            "and silently ignored"
                        ),
                    )
                )
            else:
                recs.append(
                    (
                        "then generate",
                        BROKEN,
                        short(f"exit {run2.rc}; diffusion weights recorded as {rec} | {evidence(run2)}"),
                    )
                )
            return recs

        return fn

    add(c, "models import <other diffusion weights> --model brain-ldm-demo (no --allow-unverified)", single_ckpt(False))
    add(
        c,
        "models import <other diffusion weights> --model brain-ldm-demo --allow-unverified (a complete "
        "shipped id: refused)",
        single_ckpt(True),
    )

    def tampered_install(ctx: Ctx):
        """A cache entry for brain-ldm-demo whose install.json vouches for other weights ('verified')."""
        folder = ctx.home / "models" / "brain-ldm-demo"
        folder.mkdir(parents=True)
        entries = {}
        for key in ("autoencoder", "diffusion"):
            f = perturbed_weights(
                SHIPPED / "brain-ldm-demo" / f"{key}.safetensors", folder / f"{key}.safetensors", seed=3
            )
            entries[key] = {
                "file": f.name,
                "sha256": sha256_file(f),
                "size": f.stat().st_size,
                "mtime": f.stat().st_mtime,
                "checksum": "verified",
                "source": "x",
            }
        (folder / "install.json").write_text(
            json.dumps({"model": "brain-ldm-demo", "card_version": "1.0.0", "weights": entries})
        )
        run, weights = generate_weights(ctx, "after.nii.gz")
        used = {k: v.get("sha256") for k, v in (weights or {}).items()}
        if run.rc == 0 and used and used != SHIPPED_SHA["brain-ldm-demo"]:
            return BROKEN, short(
                "weights whose sha256 differs from the card's were run under brain-ldm-demo (install.json "
                f"said 'verified'; card sha256 never compared): {used}"
            )
        if run.rc == 0:
            return OK_ACCEPT, "shipped weights used"
        return judge("bad", run, [], ctx)

    add(
        c,
        "cache install.json for brain-ldm-demo vouching for other weights (never checked against the card)",
        tampered_install,
    )


def define_bundles(c: str) -> None:
    from SynthBrainLib.models.cards import builtin_cards

    ldm = builtin_cards()["brain-ldm"]

    def bundle(
        ctx: Ctx, config: Any, models: dict[str, Callable[[Path], Any]] | None = None, name: str = "bundle"
    ) -> Path:
        b = ctx.d / name
        (b / "configs").mkdir(parents=True)
        (b / "models").mkdir()
        cfg = b / "configs" / "inference.json"
        if isinstance(config, bytes):
            cfg.write_bytes(config)
        else:
            cfg.write_text(config if isinstance(config, str) else json.dumps(config))
        for fname, make in (models or {}).items():
            make(b / "models" / fname)
        return b

    def ldm_config(edit: Callable | None = None) -> dict:
        cfg = {}
        for name, key in ldm.source["network_keys"].items():
            spec = ldm.networks[name]
            cfg[key] = {"_target_": f"generative.networks.nets.{spec.cls}", **copy.deepcopy(dict(spec.kwargs))}
        cfg["device"] = "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')"
        if edit:
            edit(cfg)
        return cfg

    def imp_bundle(*extra):
        return ["models", "import", "{d}/bundle", *extra]

    garbage = {"autoencoder.pt": lambda p: p.write_bytes(b"x" * 100), "model.pt": lambda p: p.write_bytes(b"y" * 100)}
    cli(
        c,
        "models import <bundle: inference.json is a list>",
        imp_bundle(),
        setup=lambda ctx: bundle(ctx, "[1, 2]", garbage),
    )
    cli(
        c,
        "models import <bundle: inference.json is a string>",
        imp_bundle(),
        setup=lambda ctx: bundle(ctx, '"autoencoder_def"', garbage),
    )
    cli(
        c,
        "models import <bundle: inference.json not UTF-8>",
        imp_bundle(),
        setup=lambda ctx: bundle(ctx, b'{"autoencoder_def": "\xff"}', garbage),
    )
    cli(
        c,
        "models import <bundle: inference.json nested 200000 deep>",
        imp_bundle(),
        setup=lambda ctx: bundle(ctx, deep_json(), garbage),
    )
    cli(c, "models import <bundle: inference.json {}>", imp_bundle(), setup=lambda ctx: bundle(ctx, {}, garbage))
    cli(
        c,
        "models import <bundle: network defs as '$...' expressions>",
        imp_bundle(),
        setup=lambda ctx: bundle(
            ctx,
            ldm_config(
                lambda cfg: cfg["autoencoder_def"].update(
                    spatial_dims=f"$__import__('os').system('touch {marker('dollar-bundle')}') or 3"
                )
            ),
            garbage,
        ),
    )
    cli(
        c,
        "models import <bundle: Brain LDM defs, weights missing>",
        imp_bundle(),
        setup=lambda ctx: bundle(ctx, ldm_config()),
    )
    cli(
        c,
        "models import <bundle: Brain LDM defs, garbage weights> (md5 mismatch)",
        imp_bundle(),
        setup=lambda ctx: bundle(ctx, ldm_config(), garbage),
    )
    cli(
        c,
        "models import <bundle: Brain LDM defs, pickle payload model.pt> --allow-unverified",
        imp_bundle("--allow-unverified"),
        timeout=300,
        setup=lambda ctx: bundle(
            ctx,
            ldm_config(),
            {
                "autoencoder.pt": lambda p: write_payload(p, "zip", "bundle-payload-ae"),
                "model.pt": lambda p: write_payload(p, "legacy", "bundle-payload-unet"),
            },
        ),
    )

    # a custom card that describes a MONAI bundle, with bundle_path outside the bundle
    def evil_bundle_card(bundle_paths: Callable[[Ctx], dict], symlink_models: bool = False):
        def fn(ctx: Ctx):
            outside = ctx.d / "outside"
            outside.mkdir()
            for f in ("autoencoder.safetensors", "diffusion.safetensors"):
                shutil.copy(SHIPPED / "brain-ldm-demo" / f, outside / f)
            paths = bundle_paths(ctx)

            def edit(k):
                k["id"] = "evil-bundle"
                k["source"] = {
                    "type": "monai-bundle",
                    "bundle": "evil",
                    "network_keys": {"autoencoder": "autoencoder_def", "diffusion": "diffusion_def"},
                }
                for key, bp in paths.items():
                    k["weights"][key]["bundle_path"] = bp
                return k

            folder = model_folder(ctx, edit=edit, name="evil-card")
            before = snapshot(watched(ctx))
            run = run_cli(["--home", str(ctx.home), "models", "import", str(folder)], ctx.d)
            diff = changes(before, snapshot(watched(ctx)))
            if run.rc != 0:
                return [("import of the card", *judge("bad", run, diff, ctx))]
            recs = [
                (
                    "import of the card",
                    OK_ACCEPT,
                    "card with bundle_path " + short(paths) + " accepted (used only for bundle imports)",
                )
            ]
            card = json.loads((folder / "card.json").read_text())
            cfg = {
                key: {"_target_": card["networks"][name]["class"], **card["networks"][name]["kwargs"]}
                for name, key in (("autoencoder", "autoencoder_def"), ("diffusion", "diffusion_def"))
            }
            b = ctx.d / "bundle"
            (b / "configs").mkdir(parents=True)
            (b / "configs" / "inference.json").write_text(json.dumps(cfg))
            if symlink_models:
                (b / "models").symlink_to(outside)
            else:
                (b / "models").mkdir()
            home_before = snapshot([ctx.home])
            run2 = run_cli(["--home", str(ctx.home), "models", "import", str(b), "--model", "evil-bundle"], ctx.d)
            diff2 = changes(home_before, snapshot([ctx.home]))
            if run2.rc == 0:
                recs.append(
                    (
                        "then import of a bundle",
                        BROKEN,
                        short(
                            f"weights read from outside the bundle folder ({paths}) and installed: exit 0, "
                            f"{len(diff2)} cache changes"
                        ),
                    )
                )
            else:
                recs.append(("then import of a bundle", *judge("bad", run2, diff2, ctx)))
            return recs

        return fn

    add(
        c,
        "bundle card with bundle_path '../outside/...' (path traversal)",
        evil_bundle_card(
            lambda ctx: {
                "autoencoder": "../outside/autoencoder.safetensors",
                "diffusion": "../outside/diffusion.safetensors",
            }
        ),
    )
    add(
        c,
        "bundle card with absolute bundle_path",
        evil_bundle_card(
            lambda ctx: {k: str(ctx.d / "outside" / f"{k}.safetensors") for k in ("autoencoder", "diffusion")}
        ),
    )
    add(
        c,
        "bundle card with bundle_path 'models/../../outside/...'",
        evil_bundle_card(
            lambda ctx: {
                "autoencoder": "models/../../outside/autoencoder.safetensors",
                "diffusion": "models/../../outside/diffusion.safetensors",
            }
        ),
    )
    add(
        c,
        "bundle whose models/ is a symlink to a folder outside the bundle",
        evil_bundle_card(
            lambda ctx: {"autoencoder": "models/autoencoder.safetensors", "diffusion": "models/diffusion.safetensors"},
            symlink_models=True,
        ),
    )

    def good_bundle(ctx: Ctx):
        """A custom bundle card with normal bundle paths, and a real bundle folder: must import."""

        def edit(k):
            k["id"] = "my-bundle"
            k["source"] = {
                "type": "monai-bundle",
                "bundle": "mine",
                "network_keys": {"autoencoder": "autoencoder_def", "diffusion": "diffusion_def"},
            }
            for key in ("autoencoder", "diffusion"):
                k["weights"][key]["bundle_path"] = f"models/{key}.safetensors"
            return k

        folder = model_folder(ctx, edit=edit, name="card")
        run = run_cli(["--home", str(ctx.home), "models", "import", str(folder)], ctx.d)
        if run.rc != 0:
            return judge("good", run, [], ctx)
        card = json.loads((folder / "card.json").read_text())
        b = ctx.d / "bundle"
        (b / "configs").mkdir(parents=True)
        (b / "models").mkdir()
        (b / "configs" / "inference.json").write_text(
            json.dumps(
                {
                    key: {"_target_": card["networks"][name]["class"], **card["networks"][name]["kwargs"]}
                    for name, key in (("autoencoder", "autoencoder_def"), ("diffusion", "diffusion_def"))
                }
            )
        )
        for key in ("autoencoder", "diffusion"):
            shutil.copy(SHIPPED / "brain-ldm-demo" / f"{key}.safetensors", b / "models" / f"{key}.safetensors")
        run2 = run_cli(["--home", str(ctx.home), "models", "import", str(b), "--model", "my-bundle"], ctx.d)
        return judge("good", run2, [], ctx)

    add(c, "custom bundle card + matching bundle folder (valid)", good_bundle)


# ==============================================================================================
# 4. batch
# ==============================================================================================
def BATCH(*extra, out: str = "B", model: str = "brain-ldm-demo") -> list:
    return ["batch", "--model", model, "--steps", "2", "--quiet", "--out", out, *extra]


def check_batch(n: int, folder: str = "B", suffix: str = ".nii.gz") -> Callable:
    def check(ctx: Ctx, run: Run):
        b = ctx.d / folder
        for i in range(n):
            data = b / f"sample_{i:05d}{suffix}"
            side = b / f"sample_{i:05d}.json"
            if not data.is_file():
                return f"{data.name} missing"
            rec = sidecar(side)
            if not isinstance(rec, dict) or rec.get("sha256_of_data") != sha256_file(data):
                return f"{side.name} missing or does not match {data.name}"
        manifest = b / "manifest.csv"
        if not manifest.is_file():
            return "manifest.csv missing"
        rows = manifest.read_text().strip().splitlines()
        if len(rows) != n + 1:
            return f"manifest.csv has {len(rows) - 1} rows, expected {n}"
        return None

    return check


def csv_setup(content: bytes | str, name: str = "c.csv") -> Callable:
    def setup(ctx: Ctx):
        p = ctx.d / name
        p.write_bytes(content if isinstance(content, bytes) else content.encode())

    return setup


def define_batch() -> None:
    c = "batch"
    cli(
        c,
        "batch -n 2 --range age=50:60 --range sex=female,male (valid)",
        BATCH("-n", "2", "--range", "age=50:60", "--range", "sex=female,male", "--seed", "1"),
        expect="good",
        check=check_batch(2),
    )
    cli(
        c,
        "batch --conditions <2-row CSV> (valid)",
        BATCH("--conditions", "c.csv"),
        expect="good",
        setup=csv_setup("age,sex\n60,female\n70,male\n"),
        check=check_batch(2),
    )
    cli(
        c,
        "batch --conditions <CSV with UTF-8 BOM, empty cell>",
        BATCH("--conditions", "c.csv"),
        expect="good",
        setup=csv_setup(b"\xef\xbb\xbfage,sex\n60,\n"),
        check=check_batch(1),
    )
    cli(
        c,
        "batch --model labels-demo --range wmh=0:0.02 -n 1",
        BATCH("-n", "1", "--range", "wmh=0:0.02", model="labels-demo"),
        expect="good",
        check=check_batch(1),
    )
    cli(
        c,
        "batch --format NRRD -n 1",
        BATCH("-n", "1", "--format", "NRRD"),
        expect="good",
        check=check_batch(1, suffix=".nrrd"),
    )
    for desc, content in [
        ("not UTF-8 (latin-1)", b"age,sex\n60,f\xe9male\n"),
        ("unknown column 'height'", "age,height\n60,180\n"),
        ("age 'abc'", "age\nabc\n"),
        ("age 'nan'", "age\nnan\n"),
        ("age '1e999'", "age\n1e999\n"),
        ("sex 'alien'", "sex\nalien\n"),
        ("a NUL byte", b"age\n6\x000\n"),
        ("a 200000-character field", "age\n" + "7" * 200_000 + "\n"),
        ("a header and no rows", "age,sex\n"),
        ("empty", ""),
        ("only a newline", "\n"),
        ("a '$...' expression as a value", f"age\n$__import__('os').system('touch {marker('dollar-csv')}')\n"),
        ("binary garbage", bytes(range(256)) * 4),
        ("UTF-16 encoded", "age,sex\n60,female\n".encode("utf-16")),
    ]:
        cli(c, f"batch --conditions <CSV: {desc}>", BATCH("--conditions", "c.csv"), setup=csv_setup(content))
    cli(
        c,
        "batch --conditions <CSV: duplicate column names>",
        BATCH("--conditions", "c.csv"),
        expect="either",
        setup=csv_setup("age,age\n60,70\n"),
        check=check_batch(1),
    )
    cli(
        c,
        "batch --conditions <CSV: a row with extra fields>",
        BATCH("--conditions", "c.csv"),
        expect="either",
        setup=csv_setup("age\n60,70,80\n"),
        check=check_batch(1),
    )
    cli(
        c, "batch --conditions <a directory>", BATCH("--conditions", "cdir"), setup=lambda ctx: (ctx.d / "cdir").mkdir()
    )
    cli(c, "batch --conditions <missing>", BATCH("--conditions", "missing.csv"))
    cli(
        c, "batch --conditions <missing, name with a newline> (one-line error?)", BATCH("--conditions", "miss\ning.csv")
    )
    cli(
        c,
        "batch --conditions <2 rows> -n 5",
        BATCH("--conditions", "c.csv", "-n", "5"),
        setup=csv_setup("age\n60\n70\n"),
    )
    cli(
        c,
        "batch --conditions <CSV> --range age=50:60 (both)",
        BATCH("--conditions", "c.csv", "--range", "age=50:60"),
        setup=csv_setup("age\n60\n"),
    )
    # ---- --out -----------------------------------------------------------------------------------
    cli(
        c,
        "batch --out <an existing file>",
        BATCH("-n", "1", out="afile"),
        setup=lambda ctx: (ctx.d / "afile").write_text("precious"),
    )
    cli(c, "batch --out /proc/synthbrain-batch", BATCH("-n", "1", out="/proc/synthbrain-batch"))
    cli(c, "batch --out /sys/synthbrain-batch (unwritable)", BATCH("-n", "1", out="/sys/synthbrain-batch"))
    cli(
        c,
        "batch --out <file>/sub (parent is a file)",
        BATCH("-n", "1", out="afile/sub"),
        setup=lambda ctx: (ctx.d / "afile").write_text("x"),
    )
    cli(c, "batch --out <300-character folder name>", BATCH("-n", "1", out="o" * 300))
    # ---- --range, -n, other options --------------------------------------------------------------
    for v in [
        "age",
        "age=",
        "age=abc:def",
        "age=90:100",
        "age=82:45",
        "=1:2",
        "age=nan:1",
        "age=1:2:3",
        "sex=",
        "sex=female,alien",
        "height=1:2",
        "age=-inf:inf",
        "age=:",
    ]:
        cli(c, f"batch --range {v!r}", BATCH("-n", "1", "--range", v))
    for v in ["0", "-1", "1000001", "1.5", str(2**70)]:
        cli(c, f"batch -n {v}", BATCH(f"--count={v}"))
    cli(c, "batch without -n or --conditions", BATCH())
    for v in ["png", "", "nii.gz.gz", "mha"]:
        cli(c, f"batch --format {v!r}", BATCH("-n", "1", f"--format={v}"))
    for v in ["-1", str(2**63), str(2**64)]:
        cli(c, f"batch --seed {v}", BATCH("-n", "1", f"--seed={v}"))
    cli(c, "batch --model label2image-demo", BATCH("-n", "1", model="label2image-demo"))
    cli(c, "batch --model no-such-model", BATCH("-n", "1", model="no-such-model"))
    cli(c, "batch --steps 0", BATCH("-n", "1", "--steps", "0"))
    cli(c, "batch --sampler pndm", BATCH("-n", "1", "--sampler", "pndm"))
    cli(c, "batch --precision float16", BATCH("-n", "1", "--precision", "float16"))
    cli(c, "batch --device cuda", BATCH("-n", "1", "--device", "cuda"))
    cli(c, "batch --decode nonsense", BATCH("-n", "1", "--decode", "nonsense"))
    # ---- restarts --------------------------------------------------------------------------------
    define_batch_restarts(c)


_BATCH_TEMPLATE: dict[str, Path] = {}
RESTART_ARGS = ["-n", "2", "--range", "age=50:60", "--seed", "4"]


def batch_template() -> Path:
    """A finished 2-sample batch, made once and copied for each restart case."""
    if "t" not in _BATCH_TEMPLATE:
        folder = G.root / "batch-template"
        folder.mkdir()
        home = folder / "home"
        home.mkdir()
        run = run_cli(["--home", str(home)] + BATCH(*RESTART_ARGS), folder)
        if run.rc != 0:
            raise RuntimeError(f"could not make the batch template: {evidence(run)}")
        _BATCH_TEMPLATE["t"] = folder / "B"
    return _BATCH_TEMPLATE["t"]


def define_batch_restarts(c: str) -> None:
    def restart(
        desc: str, damage: Callable[[Path], Any], expect: str, args: list | None = None, check: Callable | None = None
    ):
        def fn(ctx: Ctx):
            b = ctx.d / "B"
            shutil.copytree(batch_template(), b, symlinks=True)
            damage(b)
            before = snapshot(watched(ctx))
            run = run_cli(["--home", str(ctx.home)] + BATCH(*(args or RESTART_ARGS)), ctx.d)
            diff = changes(before, snapshot(watched(ctx)))
            return judge(expect, run, diff, ctx, check or check_batch(2))

        add(c, f"batch restart: {desc}", fn)

    def side(i):
        return lambda b: b / f"sample_{i:05d}.json"

    restart("sample_00000.nii.gz truncated (remade)", lambda b: truncate(b / "sample_00000.nii.gz", 0.3), "good")
    restart("sample_00001.json deleted (remade)", lambda b: (b / "sample_00001.json").unlink(), "good")
    restart("sample_00001.nii.gz deleted (remade)", lambda b: (b / "sample_00001.nii.gz").unlink(), "good")
    restart("nothing to do (all finished)", lambda b: None, "good")
    restart("manifest.csv garbage (rebuilt)", lambda b: (b / "manifest.csv").write_bytes(b"\xff\x00garbage"), "good")
    restart("sidecar sample_00000.json is a JSON list", lambda b: side(0)(b).write_text("[1, 2]"), "either")
    restart("sidecar sample_00000.json is {}", lambda b: side(0)(b).write_text("{}"), "either")
    restart("sidecar sample_00000.json not UTF-8", lambda b: side(0)(b).write_bytes(b'{"batch": "\xff"}'), "either")
    restart("sidecar sample_00000.json nested 200000 deep", lambda b: side(0)(b).write_text(deep_json()), "either")
    restart("sidecar sample_00000.json {'batch': 5}", lambda b: side(0)(b).write_text('{"batch": 5}'), "either")
    restart(
        "sidecar sample_00000.json {'batch': {...}, 'model': 'x'}",
        lambda b: side(0)(b).write_text('{"batch": {"index": 0}, "model": "x"}'),
        "either",
    )
    restart("batch.json is a JSON list", lambda b: (b / "batch.json").write_text("[]"), "either")
    restart("batch.json deleted", lambda b: (b / "batch.json").unlink(), "either")
    restart(
        "sample_00000.nii.gz replaced by a folder",
        lambda b: ((b / "sample_00000.nii.gz").unlink(), (b / "sample_00000.nii.gz").mkdir()),
        "bad",
    )
    restart(
        "rerun with another --seed into the same folder",
        lambda b: None,
        "bad",
        args=["-n", "2", "--range", "age=50:60", "--seed", "5"],
    )
    restart(
        "rerun with -n 3 into the same folder",
        lambda b: None,
        "bad",
        args=["-n", "3", "--range", "age=50:60", "--seed", "4"],
    )


# ==============================================================================================
# 5. concurrency
# ==============================================================================================
def define_concurrency() -> None:
    c = "concurrency"

    def race_generate(trial: int, second_out: str = "same.nii.gz"):
        def fn(ctx: Ctx):
            outs = ["same.nii.gz", second_out]
            args = [["--home", str(ctx.home)] + GEN(out=o)[:-2] + ["-o", o] for o in outs]
            args[0][args[0].index("--seed") + 1] = "101"
            args[1][args[1].index("--seed") + 1] = "202"
            start = time.time()
            procs = [spawn(a, ctx.d) for a in args]
            runs = [finish(p, a, start, DEFAULT_TIMEOUT) for p, a in zip(procs, args)]
            rcs = [r.rc for r in runs]
            problems = []
            for name, r in zip("AB", runs):
                if r.timed_out or r.rc not in (0, 2) or "Traceback" in r.stderr:
                    problems.append(f"{name}: exit {r.rc} | {evidence(r)}")
                elif r.rc == 2 and (len(lines_of(r.stderr)) != 1 or not ERR_RE.match(lines_of(r.stderr)[0])):
                    problems.append(f"{name}: refusal not one clean line: {lines_of(r.stderr)[:3]}")
            if rcs == [0, 0]:
                problems.append(
                    "both runs succeeded: one output "
                    + ("(the shared sidecar same.json) " if second_out != outs[0] else "")
                    + "was replaced without --overwrite"
                )
            side = sidecar(ctx.d / "same.json")
            leftovers = [p.name for p in ctx.d.iterdir() if p.name.startswith(".")]
            if leftovers:
                problems.append(f"temporary files left: {leftovers}")
            if 0 in rcs:
                winner = rcs.index(0)
                data = ctx.d / outs[winner]
                if side is None or not data.is_file():
                    problems.append("winner's files missing")
                else:
                    if side.get("seed") != (101, 202)[winner]:
                        problems.append(
                            f"same.json has seed {side.get('seed')}, the winner (exit 0) used {(101, 202)[winner]}"
                        )
                    if side.get("sha256_of_data") != sha256_file(data):
                        problems.append("same.json does not describe the data file beside it")
                loser = 1 - winner
                if rcs[loser] == 2 and outs[loser] != outs[winner] and (ctx.d / outs[loser]).exists():
                    problems.append(f"loser's {outs[loser]} left behind without a sidecar of its own")
            if problems:
                return BROKEN, short("; ".join(problems), 900)
            if rcs.count(0) == 1:
                loser = rcs.index(2)
                return OK_REJECT, short(f"one won, the other refused: {lines_of(runs[loser].stderr)[0]}")
            return OK_REJECT, short(f"both refused: {lines_of(runs[0].stderr)[0]}")

        return fn

    for t in range(5):
        add(c, f"two 'generate -o same.nii.gz' at once (no --overwrite), trial {t + 1}", race_generate(t))
    for t in range(3):
        add(
            c,
            f"'generate -o same.nii.gz' and 'generate -o same.nii' at once (one sidecar same.json), trial {t + 1}",
            race_generate(t, "same.nii"),
        )

    def race_batch(trial: int, same: bool = False):
        def fn(ctx: Ctx):
            seeds = ["1", "1"] if same else ["1", "2"]
            args = [["--home", str(ctx.home)] + BATCH("-n", "2", "--range", "age=50:60", "--seed", s) for s in seeds]
            start = time.time()
            procs = [spawn(a, ctx.d) for a in args]
            runs = [finish(p, a, start, DEFAULT_TIMEOUT) for p, a in zip(procs, args)]
            rcs = [r.rc for r in runs]
            problems = []
            for name, r in zip("AB", runs):
                if r.timed_out or r.rc not in (0, 2) or "Traceback" in r.stderr:
                    problems.append(f"{name}: exit {r.rc} | {evidence(r)}")
                elif r.rc == 2 and (len(lines_of(r.stderr)) != 1 or not ERR_RE.match(lines_of(r.stderr)[0])):
                    problems.append(f"{name}: refusal not one clean line: {lines_of(r.stderr)[:3]}")
            b = ctx.d / "B"
            if not same and rcs == [0, 0]:
                problems.append("both batches (different seeds) succeeded into one folder")
            if 0 in rcs:
                err = check_batch(2)(ctx, runs[rcs.index(0)])
                if err:
                    problems.append("folder inconsistent: " + err)
                bases = {
                    json.loads((b / f"sample_{i:05d}.json").read_text()).get("batch", {}).get("base_seed")
                    for i in range(2)
                    if (b / f"sample_{i:05d}.json").is_file()
                }
                spec = sidecar(b / "batch.json") or {}
                if len(bases) > 1 or (bases and spec.get("base_seed") not in bases):
                    problems.append(
                        f"samples from different batches mixed: base seeds {sorted(map(str, bases))}, "
                        f"batch.json {spec.get('base_seed')}"
                    )
            if problems:
                return BROKEN, short("; ".join(problems), 900)
            if same:
                return OK_ACCEPT, f"exit codes {rcs}; folder consistent"
            loser = rcs.index(2) if 2 in rcs else 0
            return OK_REJECT, short(
                f"exit codes {rcs}: {lines_of(runs[loser].stderr)[0] if lines_of(runs[loser].stderr) else ''}"
            )

        return fn

    for t in range(2):
        add(c, f"two different batches (seeds 1 and 2) into one folder at once, trial {t + 1}", race_batch(t))
    add(c, "the same batch twice at once into one folder", race_batch(0, same=True))

    def race_import(trial: int):
        def fn(ctx: Ctx):
            f1 = perturbed_folder(
                ctx, "brain-ldm-demo", "twin1", seed=21, card_edit=lambda k: k.update(id="twin", description="first")
            )
            f2 = perturbed_folder(
                ctx, "brain-ldm-demo", "twin2", seed=22, card_edit=lambda k: k.update(id="twin", description="second")
            )
            args = [["--home", str(ctx.home), "models", "import", str(f)] for f in (f1, f2)]
            start = time.time()
            procs = [spawn(a, ctx.d) for a in args]
            runs = [finish(p, a, start, DEFAULT_TIMEOUT) for p, a in zip(procs, args)]
            problems = [
                f"{n}: exit {r.rc} | {evidence(r)}"
                for n, r in zip("AB", runs)
                if r.timed_out or r.rc not in (0, 2) or "Traceback" in r.stderr
            ]
            verify = run_cli(["--home", str(ctx.home), "models", "verify", "twin"], ctx.d)
            if verify.rc != 0 or "Traceback" in verify.stderr:
                problems.append(
                    f"models verify twin afterwards: exit {verify.rc} | {short(verify.stdout.strip())} | "
                    f"{evidence(verify)}"
                )
            gen, weights = generate_weights(ctx, "after.nii.gz", "twin")
            if gen.rc != 0:
                problems.append(f"generate --model twin afterwards: exit {gen.rc} | {evidence(gen)}")
            else:
                used = {k: v.get("sha256") for k, v in (weights or {}).items()}
                sets = [
                    {k: sha256_file(f / f"{k}.safetensors") for k in ("autoencoder", "diffusion")} for f in (f1, f2)
                ]
                if used not in sets:
                    problems.append(f"generate --model twin ran a mix of both imports' weights: {used}")
            if problems:
                return BROKEN, short("; ".join(problems), 900)
            return OK_ACCEPT, f"exit codes {[r.rc for r in runs]}; cache consistent afterwards"

        return fn

    for t in range(2):
        add(c, f"two 'models import' of different weights under one new id at once, trial {t + 1}", race_import(t))


# ==============================================================================================
# 6. Python API
# ==============================================================================================
_PIPES: dict[str, Any] = {}


def pipe(model: str):
    if model not in _PIPES:
        import SynthBrainLib
        from SynthBrainLib.models.store import ModelStore

        _PIPES[model] = SynthBrainLib.load_pipeline(model, device="cpu", store=ModelStore(home=G.root / "api-home"))
    return _PIPES[model]


def define_api() -> None:
    import torch

    import SynthBrainLib
    from SynthBrainLib.models.store import ModelStore

    c = "api"
    store = lambda ctx: ModelStore(home=ctx.home)  # noqa: E731

    def lp(model="brain-ldm-demo", **kw):
        return lambda ctx: SynthBrainLib.load_pipeline(model, store=store(ctx), **kw)

    # ---- load_pipeline ---------------------------------------------------------------------------
    for desc, kw in [
        ("device=0", dict(device=0)),
        ("device=['cpu']", dict(device=["cpu"])),
        ("device=1.5", dict(device=1.5)),
        ("device='cuda'", dict(device="cuda")),
        ("precision=5", dict(precision=5)),
        ("precision='float16' (CPU)", dict(precision="float16")),
        ("precision=['float32']", dict(precision=["float32"])),
        ("decode=5", dict(decode=5)),
        ("decode=['full']", dict(decode=["full"])),
        ("cache_size=-1", dict(cache_size=-1)),
        ("cache_size=True", dict(cache_size=True)),
        ("cache_size=1.5", dict(cache_size=1.5)),
        ("compile='x'", dict(compile="x")),
        ("tiles='x'", dict(tiles="x")),
        ("half='yes'", dict(half="yes")),
        ("half=True on the CPU", dict(half=True)),
        ("unknown option foo=1", dict(foo=1)),
    ]:
        api(c, f"load_pipeline('brain-ldm-demo', {desc})", lp(**kw))
    for desc, model in [
        ("None", None),
        ("123", 123),
        ("''", ""),
        ("'../../../etc'", "../../../etc"),
        ("b'brain-ldm-demo'", b"brain-ldm-demo"),
        ("['brain-ldm-demo']", ["brain-ldm-demo"]),
    ]:
        api(c, f"load_pipeline({desc})", lp(model))
    api(
        c,
        "load_pipeline('brain-ldm-demo', store='x')",
        lambda ctx: SynthBrainLib.load_pipeline("brain-ldm-demo", store="x"),
    )
    api(
        c,
        "load_pipeline(Path(<shipped folder>), device=torch.device('cpu'))",
        lambda ctx: SynthBrainLib.load_pipeline(
            SHIPPED / "brain-ldm-demo", device=torch.device("cpu"), store=store(ctx)
        ),
        expect="good",
    )
    api(c, "load_pipeline('brain-ldm-demo', device=None)", lp(device=None), expect="good")

    # ---- brain generate ----------------------------------------------------------------------------
    def gen(**kw):
        args = dict(seed=1, preview=True, steps=2)
        args.update(kw)
        return lambda ctx: pipe("brain-ldm-demo").generate(**args)

    bad_gen = [
        ("sex=['female']", dict(sex=["female"])),
        ("sex={'female': 1}", dict(sex={"female": 1})),
        ("sex=1", dict(sex=1)),
        ("sex=b'female'", dict(sex=b"female")),
        ("age=10**400", dict(age=10**400)),
        ("age=complex(70, 1)", dict(age=complex(70, 1))),
        ("age=[70]", dict(age=[70])),
        ("age=np.array([70., 71.])", dict(age=np.array([70.0, 71.0]))),
        ("age=nan", dict(age=float("nan"))),
        ("age=True", dict(age=True)),
        ("age=-inf", dict(age=-float("inf"))),
        ("age=object()", dict(age=object())),
        ("sampler=5", dict(sampler=5)),
        ("sampler=''", dict(sampler="")),
        ("sampler=['ddim']", dict(sampler=["ddim"])),
        ("steps=2.5", dict(steps=2.5)),
        ("steps=True", dict(steps=True)),
        ("steps='2'", dict(steps="2")),
        ("steps=-1", dict(steps=-1)),
        ("steps=10**30", dict(steps=10**30)),
        ("seed=True", dict(seed=True)),
        ("seed=-1", dict(seed=-1)),
        ("seed=2**64", dict(seed=2**64)),
        ("seed=1.0", dict(seed=1.0)),
        ("seed='1'", dict(seed="1")),
        ("seed=np.float64(1)", dict(seed=np.float64(1))),
        ("cancel='yes'", dict(cancel="yes")),
        ("cancel=True", dict(cancel=True)),
        ("cancel=5", dict(cancel=5)),
        ("progress=5", dict(progress=5)),
        ("progress='x'", dict(progress="x")),
        ("raw='x'", dict(raw="x")),
        ("raw=[('age', 0.5)]", dict(raw=[("age", 0.5)])),
        ("raw={'age': 'abc'}", dict(raw={"age": "abc"})),
        ("raw={'age': 0.5} with age=70", dict(raw={"age": 0.5}, age=70)),
        ("raw={5: 0.5}", dict(raw={5: 0.5})),
        ("unknown condition height=180", dict(height=180)),
        ("raw={'sex': 2}", dict(raw={"sex": 2})),
    ]
    for desc, kw in bad_gen:
        api(c, f"brain generate({desc})", gen(**kw))
    ev = threading.Event()
    ev.set()
    api(c, "brain generate(cancel=<set Event>) (cancelled cleanly)", gen(cancel=ev))
    api(c, "brain generate(cancel=lambda: True) (cancelled cleanly)", gen(cancel=lambda: True))
    for desc, kw in [
        ("age='70' (numeric string)", dict(age="70")),
        ("seed=np.uint64(5)", dict(seed=np.uint64(5))),
        ("steps=np.int64(2)", dict(steps=np.int64(2))),
        ("sex=' Male '", dict(sex=" Male ")),
        ("age=np.float32(70)", dict(age=np.float32(70))),
        ("preview='yes'", dict(preview="yes")),
    ]:
        api(c, f"brain generate({desc})", gen(**kw), expect="either")
    api(
        c,
        "brain generate(age=70, sex='female') (valid)",
        gen(age=70, sex="female"),
        expect="good",
        check=lambda ctx, r: (
            None
            if r.image is not None and r.image.shape == (64, 80, 64) and np.isfinite(r.image).all()
            else "bad image"
        ),
    )

    # ---- labels generate -------------------------------------------------------------------------------
    def lgen(**kw):
        args = dict(seed=3, preview=True, steps=2)
        args.update(kw)
        return lambda ctx: pipe("labels-demo").generate(**args)

    for desc, kw in [
        ("wmh=-0.1", dict(wmh=-0.1)),
        ("wmh='x'", dict(wmh="x")),
        ("wmh=[0.1]", dict(wmh=[0.1])),
        ("tumour=10**400", dict(tumour=10**400)),
        ("raw={'wmh': 2}", dict(raw={"wmh": 2})),
        ("age=70 (not a condition)", dict(age=70)),
        ("cancel='no'", dict(cancel="no")),
    ]:
        api(c, f"labels generate({desc})", lgen(**kw))
    # ---- label2image generate -------------------------------------------------------------------------
    base = phantom_labels()

    def l2i(labels, **kw):
        args = dict(affine=DEMO_AFFINE, seed=1)
        args.update(kw)
        return lambda ctx: pipe("label2image-demo").generate(labels() if callable(labels) else labels, **args)

    for desc, labels, kw in [
        ("complex label array", lambda: base.astype(np.complex64), {}),
        ("string label array", lambda: np.full((8, 8, 8), "a"), {}),
        ("object array of strings", lambda: np.full((8, 8, 8), "a", dtype=object), {}),
        ("empty (0,0,0) array", lambda: np.zeros((0, 0, 0), np.uint8), {}),
        ("empty (10,0,0,0) partial volumes", lambda: np.zeros((10, 0, 0, 0), np.float32), {}),
        ("labels=None", None, {}),
        ("0-d array", lambda: np.array(3), {}),
        ("2D array", lambda: base[:, :, 10], {}),
        ("5D array", lambda: base[None, None], {}),
        ("int64 label 2**62", lambda: np.where(base == 6, np.int64(2**62), base.astype(np.int64)), {}),
        (
            "uint64 max label",
            lambda: np.where(base == 6, np.uint64(np.iinfo(np.uint64).max), base.astype(np.uint64)),
            {},
        ),
        ("negative labels", lambda: base.astype(np.int8) - 1, {}),
        ("fractional float labels", lambda: base + 0.25, {}),
        ("NaN float labels", lambda: np.where(base == 6, np.nan, base), {}),
        ("ragged nested list", lambda: [[[0, 1], [2]], [[3, 4], [5, 6]]], {}),
        ("structured (RGB) dtype", lambda: np.zeros((8, 8, 8), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")]), {}),
        ("affine='eye'", lambda: base, dict(affine="eye")),
        ("affine=np.eye(3)", lambda: base, dict(affine=np.eye(3))),
        ("affine all ones (singular)", lambda: base, dict(affine=np.ones((4, 4)))),
        ("affine with NaN", lambda: base, dict(affine=np.full((4, 4), np.nan))),
        ("affine=None with labels off the model grid", lambda: base[:40], dict(affine=None)),
        ("affine object array of strings", lambda: base, dict(affine=np.full((4, 4), "x", dtype=object))),
        ("affine complex", lambda: base, dict(affine=DEMO_AFFINE.astype(np.complex128) + 1j)),
        ("affine=5", lambda: base, dict(affine=5)),
        ("sequence=5", lambda: base, dict(sequence=5)),
        ("sequence=None", lambda: base, dict(sequence=None)),
        ("sequence='PD'", lambda: base, dict(sequence="PD")),
        ("alignment=5", lambda: base, dict(alignment=5)),
        ("alignment=['world']", lambda: base, dict(alignment=["world"])),
        ("sampler='ddim' (SPADE GAN)", lambda: base, dict(sampler="ddim")),
        ("steps=2 (SPADE GAN)", lambda: base, dict(steps=2)),
        ("seed=True", lambda: base, dict(seed=True)),
        ("seed=-5", lambda: base, dict(seed=-5)),
        ("cancel='yes'", lambda: base, dict(cancel="yes")),
        ("progress=5", lambda: base, dict(progress=5)),
    ]:
        api(c, f"label2image generate({desc})", l2i(labels, **kw))
    for desc, labels, kw in [
        ("bool label array", lambda: base > 2, {}),
        ("torch tensor labels", lambda: torch.from_numpy(base.astype(np.int64)), {}),
        ("labels as (1,X,Y,Z)", lambda: base[None], {}),
        ("affine as nested lists", lambda: base, dict(affine=DEMO_AFFINE.tolist())),
    ]:
        api(c, f"label2image generate({desc})", l2i(labels, **kw), expect="either")
    api(c, "label2image generate(uint8 labels, sequence='T2') (valid)", l2i(lambda: base, sequence="T2"), expect="good")
    # ---- ModelStore -------------------------------------------------------------------------------------
    api(c, "ModelStore(home=123)", lambda ctx: ModelStore(home=123))
    api(c, "ModelStore(home=['x'])", lambda ctx: ModelStore(home=["x"]))
    api(c, "ModelStore(shipped=5)", lambda ctx: ModelStore(home=ctx.home, shipped=5))
    for desc, arg in [
        ("123", 123),
        ("None", None),
        ("b'/tmp'", b"/tmp"),
        ("''", ""),
        ("['x']", ["x"]),
        ("'<missing, name with newline>'", "missing\nfile.pt"),
    ]:
        api(c, f"ModelStore().import_path({desc})", lambda ctx, arg=arg: store(ctx).import_path(arg))
    api(
        c,
        "ModelStore().import_path(<pickle payload .pt>, model='brain-ldm-demo', component='diffusion', "
        "allow_unverified=True)",
        lambda ctx: store(ctx).import_path(
            ctx.d / "evil.pt", model="brain-ldm-demo", component="diffusion", allow_unverified=True
        ),
        setup=lambda ctx: write_payload(ctx.d / "evil.pt", "zip", "api-payload"),
    )
    api(
        c,
        "ModelStore().import_path(<checkpoint>, model=5, component='diffusion')",
        lambda ctx: store(ctx).import_path(
            SHIPPED / "brain-ldm-demo" / "diffusion.safetensors", model=5, component="diffusion"
        ),
    )
    api(
        c,
        "ModelStore().import_path(<checkpoint>, model='brain-ldm-demo', component=['diffusion'])",
        lambda ctx: store(ctx).import_path(
            SHIPPED / "brain-ldm-demo" / "diffusion.safetensors", model="brain-ldm-demo", component=["diffusion"]
        ),
    )
    api(
        c,
        "ModelStore().import_path(<folder with nested-deep card.json>)",
        lambda ctx: store(ctx).import_path(ctx.d / "model"),
        setup=lambda ctx: model_folder(ctx, raw=deep_json()),
    )
    api(c, "ModelStore().locate(None)", lambda ctx: store(ctx).locate(None))
    api(c, "ModelStore().locate(5)", lambda ctx: store(ctx).locate(5))
    api(c, "ModelStore().card(['x'])", lambda ctx: store(ctx).card(["x"]))
    api(c, "ModelStore().verify('no-such-model')", lambda ctx: store(ctx).verify("no-such-model"))
    # ---- read_volume / write_volume / save ---------------------------------------------------------------
    for desc, arg in [
        ("123", 123),
        ("None", None),
        ("b'/tmp/x.nii.gz'", b"/tmp/x.nii.gz"),
        ("''", ""),
        ("'<missing, name with newline>.nii.gz'", "miss\ning.nii.gz"),
        ("'/dev/null.nii.gz'", "/dev/null.nii.gz"),
        ("Path('/dev/zero')", Path("/dev/zero")),
    ]:
        api(c, f"read_volume({desc})", lambda ctx, arg=arg: SynthBrainLib.read_volume(arg))
    api(
        c,
        "read_volume(<header bomb .nii 32767^3 float64>)",
        lambda ctx: SynthBrainLib.read_volume(ctx.d / "bomb.nii"),
        setup=lambda ctx: nifti_header_bomb(ctx.d / "bomb.nii", (32767,) * 3, np.float64),
    )
    api(
        c,
        "read_volume(<truncated .nii.gz>)",
        lambda ctx: SynthBrainLib.read_volume(ctx.d / "t.nii.gz"),
        setup=lambda ctx: (save_nii(ctx.d / "t.nii.gz", base), truncate(ctx.d / "t.nii.gz", 0.4)),
    )
    api(
        c,
        "read_volume(<valid label map>)",
        lambda ctx: SynthBrainLib.read_volume(ctx.d / "ok.nii.gz"),
        expect="good",
        setup=lambda ctx: save_nii(ctx.d / "ok.nii.gz", base),
    )
    prov = {"model": {"id": "x"}, "seed": 1}
    wv = SynthBrainLib.write_volume
    for desc, call in [
        ("array='x'", lambda ctx: wv(ctx.d / "w.nii.gz", "x", np.eye(4), prov)),
        ("array=None", lambda ctx: wv(ctx.d / "w.nii.gz", None, np.eye(4), prov)),
        ("array of strings", lambda ctx: wv(ctx.d / "w.nii.gz", np.full((4, 4, 4), "a"), np.eye(4), prov)),
        ("affine='eye'", lambda ctx: wv(ctx.d / "w.nii.gz", np.zeros((4, 4, 4)), "eye", prov)),
        ("affine=np.eye(3)", lambda ctx: wv(ctx.d / "w.nii.gz", np.zeros((4, 4, 4)), np.eye(3), prov)),
        ("provenance='x'", lambda ctx: wv(ctx.d / "w.nii.gz", np.zeros((4, 4, 4)), np.eye(4), "x")),
        (
            "provenance with a non-JSON value",
            lambda ctx: wv(ctx.d / "w.nii.gz", np.zeros((4, 4, 4)), np.eye(4), {"model": {"id": "x"}, "x": object()}),
        ),
        ("path=5", lambda ctx: wv(5, np.zeros((4, 4, 4)), np.eye(4), prov)),
        ("path='w.png'", lambda ctx: wv(ctx.d / "w.png", np.zeros((4, 4, 4)), np.eye(4), prov)),
        (
            "path with a NUL character",
            lambda ctx: wv(str(ctx.d / "w\x00.nii.gz"), np.zeros((4, 4, 4)), np.eye(4), prov),
        ),
        (
            "path <existing file> without overwrite",
            lambda ctx: wv(ctx.d / "exists.nii.gz", np.zeros((4, 4, 4)), np.eye(4), prov),
        ),
        ("2D array", lambda ctx: wv(ctx.d / "w.nii.gz", np.zeros((4, 4)), np.eye(4), prov)),
        ("6D array", lambda ctx: wv(ctx.d / "w.nii.gz", np.zeros((2,) * 6), np.eye(4), prov)),
    ]:
        api(c, f"write_volume({desc})", call, setup=lambda ctx: (ctx.d / "exists.nii.gz").write_bytes(b"precious"))
    api(
        c,
        "write_volume(NaN image) (a plain float writer)",
        lambda ctx: wv(ctx.d / "w.nii.gz", np.full((4, 4, 4), np.nan), np.eye(4), prov),
        expect="either",
    )

    def result():
        return pipe("label2image-demo").generate(base, affine=DEMO_AFFINE, seed=2)

    for desc, arg in [
        ("5", 5),
        ("None", None),
        ("'x.png'", "x.png"),
        ("'<name with NUL>.nii.gz'", "x\x00.nii.gz"),
        ("''", ""),
        ("b'x.nii.gz'", b"x.nii.gz"),
    ]:
        api(
            c,
            f"SynthesisResult.save({desc})",
            lambda ctx, arg=arg: result().save(arg if not isinstance(arg, str) or not arg else str(ctx.d / arg)),
        )
    api(
        c,
        "SynthesisResult.save(<existing>, overwrite='no')",
        lambda ctx: result().save(ctx.d / "exists.nii.gz", overwrite="no"),
        setup=lambda ctx: (ctx.d / "exists.nii.gz").write_bytes(b"precious"),
    )
    api(
        c,
        "SynthesisResult.save(<labels result>, partial_volumes=5)",
        lambda ctx: (
            pipe("labels-demo").generate(seed=3, preview=True, steps=2).save(ctx.d / "l.nii.gz", partial_volumes=5)
        ),
    )
    # ---- cards ------------------------------------------------------------------------------------------
    from SynthBrainLib.models.cards import ModelCard

    api(c, "ModelCard.from_dict(5)", lambda ctx: ModelCard.from_dict(5))
    api(c, "ModelCard.from_dict({'id': ['x']})", lambda ctx: ModelCard.from_dict({"id": ["x"]}))
    api(
        c,
        "load_card(<nested 200000 deep>)",
        lambda ctx: SynthBrainLib.load_card(ctx.d / "card.json"),
        setup=lambda ctx: (ctx.d / "card.json").write_text(deep_json()),
    )
    api(
        c,
        "load_card(<not UTF-8>)",
        lambda ctx: SynthBrainLib.load_card(ctx.d / "card.json"),
        setup=lambda ctx: (ctx.d / "card.json").write_bytes(b'{"id": "\xff"}'),
    )
    api(c, "load_card(<a directory>)", lambda ctx: SynthBrainLib.load_card(ctx.d))
    api(c, "load_card(None)", lambda ctx: SynthBrainLib.load_card(None))
    api(
        c,
        "checkpoints.read_state_dict(<pickle payload, legacy format>)",
        lambda ctx: __import__("SynthBrainLib.models.checkpoints").models.checkpoints.read_state_dict(
            ctx.d / "evil.pt"
        ),
        setup=lambda ctx: write_payload(ctx.d / "evil.pt", "legacy", "api-read-state-dict"),
    )


# ==============================================================================================
# Running
# ==============================================================================================
def self_check() -> list[str]:
    """The payload and the error format are real: a plain unpickle runs the payload; the CLI's own
    'age 300' refusal passes the clean-rejection test."""
    notes = []
    probe = G.root / "payload-probe.pkl"
    control = G.root / "control-marker"
    import pickle

    probe.write_bytes(pickle.dumps(Payload(control), protocol=2))
    subprocess.run(
        [sys.executable, "-c", f"import pickle; pickle.load(open({str(probe)!r}, 'rb'))"],
        env=G.env,
        capture_output=True,
        timeout=60,
    )
    notes.append(
        "payload self-check: a plain pickle.load of the payload "
        f"{'DID create' if control.exists() else 'did NOT create'} its marker (so the payloads are live)"
    )
    if ZYGOTE is not None:
        d = G.root / "fidelity"
        d.mkdir()
        same = True
        for argv in (
            ["--home", str(d), "generate", "--model", "brain-ldm-demo", "--age", "300", "--quiet", "-o", "x.nii.gz"],
            ["--home", str(d), "generate", "--model", "brain-ldm-demo", "--seed", "abc", "-o", "x.nii.gz"],
            [
                "--home",
                str(d),
                "generate",
                "--model",
                "brain-ldm-demo",
                "--seed",
                "1",
                "--preview-steps",
                "2",
                "--quiet",
                "-o",
                "x.nii.gz",
            ],
        ):
            a, b = (
                run_cli(argv, d, real=True),
                run_cli(argv + ["--overwrite"] if argv[-1] == "x.nii.gz" and "--preview-steps" in argv else argv, d),
            )
            same &= (a.rc, lines_of(a.stderr)) == (b.rc, lines_of(b.stderr))
        notes.append(
            f"fork-server self-check: real subprocess and fork server {'agree' if same else 'DISAGREE'} on "
            "exit status and stderr of 3 runs"
        )
    return notes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", required=False, default=None, help="write the records here")
    ap.add_argument(
        "--only",
        action="append",
        default=[],
        help="run only cases whose id, category or description contains this (repeatable)",
    )
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folders")
    ap.add_argument(
        "--no-zygote",
        action="store_true",
        help="run every CLI case as a fresh subprocess (slower: about twice the time)",
    )
    args = ap.parse_args(argv)

    G.root = Path(tempfile.mkdtemp(prefix="synthbrain-campaign-"))
    G.markers = G.root / "markers"
    G.sentinel_home = G.root / "sentinel-home"
    G.fake_home = G.root / "fake-home"
    for p in (G.markers, G.sentinel_home, G.fake_home, G.root / "api-home"):
        p.mkdir()
    exe = Path(sys.executable).with_name("synthbrain")
    G.sb = [str(exe)] if exe.is_file() else [sys.executable, "-m", "SynthBrainLib.cli"]
    G.env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        PYTHONDONTWRITEBYTECODE="1",
        SYNTHBRAIN_HOME=str(G.sentinel_home),
        HOME=str(G.fake_home),
        PYTHONPATH=str(REPO),
    )
    G.env.pop("SYNTHBRAIN_SHIPPED_MODELS", None)
    import torch

    torch.set_num_threads(1)
    global ZYGOTE
    if not args.no_zygote:
        ZYGOTE = Zygote()

    define_generate()
    define_labels()
    define_models()
    define_batch()
    define_concurrency()
    define_api()
    prefix = {"generate": "GEN", "labels": "LAB", "models": "MOD", "batch": "BAT", "concurrency": "CON", "api": "API"}
    counters: dict[str, int] = {}
    planned = []
    for cat, desc, fn in CASES:
        counters[cat] = counters.get(cat, 0) + 1
        cid = f"{prefix[cat]}-{counters[cat]:03d}"
        if args.only and not any(o.lower() in f"{cid} {cat} {desc}".lower() for o in args.only):
            continue
        planned.append((cid, cat, desc, fn))
    if args.list:
        for cid, cat, desc, _ in planned:
            print(f"{cid}  {desc}")
        print(f"{len(planned)} cases")
        shutil.rmtree(G.root, ignore_errors=True)
        return 0

    records: list[dict] = []
    started = time.time()
    notes = self_check()
    for n in notes:
        print(n, flush=True)
    try:
        for k, (cid, cat, desc, fn) in enumerate(planned):
            d = G.root / "cases" / cid
            d.mkdir(parents=True)
            home = G.root / "homes" / cid
            home.mkdir(parents=True)
            ctx = Ctx(d=d, home=home, name=cid)
            t0 = time.time()
            try:
                result = fn(ctx)
            except Exception as exc:  # a harness failure is reported as such, never hidden
                result = (
                    BROKEN,
                    short(
                        f"HARNESS ERROR (not necessarily a library bug): {type(exc).__name__}: {exc} | "
                        f"{traceback.format_exc().splitlines()[-3:]}"
                    ),
                )
            fired = markers_fired()
            results = result if isinstance(result, list) else [(None, *result)]
            for j, (subdesc, outcome, detail) in enumerate(results):
                if fired and j == 0:
                    outcome, detail = BROKEN, f"CODE EXECUTED: payload marker(s) {fired} created | " + detail
                rid = cid if len(results) == 1 else f"{cid}{'abcdefgh'[j]}"
                rec = {
                    "id": rid,
                    "category": CATEGORIES[cat],
                    "input": desc + (f" -> {subdesc}" if subdesc else ""),
                    "outcome": outcome,
                    "detail": detail,
                }
                records.append(rec)
                flag = {"rejected cleanly": "ok-rej", "accepted correctly": "ok-acc", "broken": "BROKEN"}[outcome]
                print(
                    (
                        f"[{k + 1:3d}/{len(planned)} {time.time() - started:6.0f}s] {rid:9s} {flag:6s} "
                        f"{rec['input'][:90]}  ({time.time() - t0:.1f}s)"
                    )
                    + (f"\n      -> {detail[:300]}" if outcome == BROKEN else ""),
                    flush=True,
                )
            if not args.keep:
                for p in (d, home):
                    _force_rmtree(p)
        sentinel = snapshot([G.sentinel_home])
        if sentinel:
            records.append(
                {
                    "id": "ENV-001",
                    "category": "3 models import / cards / checkpoints",
                    "input": "$SYNTHBRAIN_HOME (not the --home of any case) untouched",
                    "outcome": BROKEN,
                    "detail": short(f"something wrote into $SYNTHBRAIN_HOME despite --home: {list(sentinel)[:5]}"),
                }
            )
    finally:
        elapsed = time.time() - started
        if args.json:
            Path(args.json).write_text(json.dumps(records, indent=1, ensure_ascii=False), encoding="utf-8")
        print_summary(records, elapsed)
        for n in notes:
            print(n)
        if ZYGOTE is not None:
            ZYGOTE.close()
        if args.keep:
            print(f"temporary folders kept in {G.root}")
        else:
            _force_rmtree(G.root)
    return 0


def _force_rmtree(path: Path) -> None:
    def onerror(func, p, exc):
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(p), 0o755)
            os.chmod(p, 0o755)
            func(p)

    if os.path.lexists(path):
        shutil.rmtree(path, onerror=onerror)


def print_summary(records: list[dict], elapsed: float) -> None:
    cats = list(CATEGORIES.values())
    rows = []
    for cat in cats + ["TOTAL"]:
        rs = records if cat == "TOTAL" else [r for r in records if r["category"] == cat]
        if not rs:
            continue
        rows.append(
            (
                cat,
                len(rs),
                sum(r["outcome"] == OK_REJECT for r in rs),
                sum(r["outcome"] == OK_ACCEPT for r in rs),
                sum(r["outcome"] == BROKEN for r in rs),
            )
        )
    w = max(len(r[0]) for r in rows) if rows else 10
    print()
    print(f"{'category':<{w}}  {'tried':>5}  {'rejected cleanly':>16}  {'accepted correctly':>18}  {'broken':>6}")
    for r in rows:
        if r[0] == "TOTAL":
            print("-" * (w + 55))
        print(f"{r[0]:<{w}}  {r[1]:>5}  {r[2]:>16}  {r[3]:>18}  {r[4]:>6}")
    argparse_style = sum(1 for r in records if "[argparse prefix]" in r["detail"])
    print(
        f"\n{argparse_style} clean rejections came from argparse ('synthbrain <command>: error: ...'); "
        f"elapsed {elapsed / 60:.1f} min"
    )
    broken = [r for r in records if r["outcome"] == BROKEN]
    if broken:
        print(f"\nbroken ({len(broken)}):")
        for r in broken:
            print(f"  {r['id']:9s} {r['input']}\n            {r['detail']}")


if __name__ == "__main__":
    sys.exit(main())
