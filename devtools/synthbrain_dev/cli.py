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

from SynthBrainLib.cli.command import command_parser, run_command

from .commands import bench, evaluate, train

#: The developers' verbs, in the order ``--help`` lists them.
VERBS = (train, evaluate, bench)


def build_parser() -> argparse.ArgumentParser:
    return command_parser(
        "synthbrain-dev",
        "SynthBrain's developer tools: train the demo models, evaluate models, benchmark synthesis.",
        VERBS,
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser(), argv)
