"""The adversarial campaign's harness: running ``synthbrain`` cases (a fork server, or fresh
subprocesses under a memory limit and a timeout), watching what they write, judging each outcome
against the contract, and the case registry (:func:`cli`, :func:`api`) the case tables
(``hostile.cases_*``) fill. The contract is :mod:`hostile.campaign`'s docstring.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import shutil
import signal
import stat
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from hostile.fixtures import REPO, SHIPPED, sha256_file, sidecar

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


def marker(name: str) -> Path:
    return G.markers / name


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
