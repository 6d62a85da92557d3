"""The developers' command, synthbrain-dev (the synthbrain-dev distribution in devtools/): its verbs,
its flags, and the same one-line error contract as synthbrain."""

from __future__ import annotations

import subprocess
import sys

from synthbrain_dev.cli import build_parser, main


def verbs_of(parser) -> dict:
    (action,) = [a for a in parser._actions if a.dest == "command"]
    return action.choices


def test_synthbrain_dev_has_the_developer_verbs():
    verbs = verbs_of(build_parser())
    assert set(verbs) == {"train", "evaluate", "bench"}, f"synthbrain-dev's verbs: {sorted(verbs)}"
    for name in ("evaluate", "bench"):
        device = {a.dest: a.default for a in verbs[name]._actions}["device"]
        assert device == "auto", f"{name}: --device defaults to {device!r}, as in synthbrain"


def test_a_bad_argument_is_one_line_with_the_commands_name(capsys):
    code = main(["train", "brain-ldm-demo", "--out", "x", "--subjects", "2"])
    err = capsys.readouterr().err
    assert code == 2, f"exit status {code}: {err}"
    assert err == "synthbrain-dev: error: --subjects 2 is too few; use at least 8\n", f"one line: {err!r}"


def test_python_m_synthbrain_dev_runs_the_command():
    done = subprocess.run(
        [sys.executable, "-m", "synthbrain_dev", "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"exit status {done.returncode}: {done.stderr[-1000:]}"
    assert done.stdout.startswith("usage: synthbrain-dev"), f"usage line: {done.stdout[:200]}"
    for verb in ("train", "evaluate", "bench"):
        assert verb in done.stdout, f"--help lists {verb}: {done.stdout}"
