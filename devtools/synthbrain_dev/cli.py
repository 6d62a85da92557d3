"""The ``synthbrain-dev`` command line: the developers' verbs (``train``, ``evaluate``, ``bench``),
apart from the user's ``synthbrain``. Same contract as ``synthbrain`` (one-line errors, exit status 2,
:mod:`SynthBrainLib.cli.command`); one module per verb in :mod:`.commands`.

The developer tools that are scripts of their own run as modules: ``python -m
synthbrain_dev.throughput``, ``python -m synthbrain_dev.evaluation.insertion``, ``python -m
synthbrain_dev.phantoms.montage`` and ``python -m synthbrain_dev.phantoms.evaluate_measures``.
"""

from __future__ import annotations

import argparse
from typing import Sequence

from SynthBrainLib._version import __version__
from SynthBrainLib.cli.command import CommandParser, add_verbs, run_command
from SynthBrainLib.cli.options import add_home

from .commands import bench, evaluate, train


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="synthbrain-dev",
        description="SynthBrain's developer tools: train the demo models, evaluate models, benchmark synthesis.",
    )
    parser.add_argument("--version", action="version", version=f"synthbrain-dev {__version__}")
    add_home(parser)
    add_verbs(parser, train, evaluate, bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser(), argv)
