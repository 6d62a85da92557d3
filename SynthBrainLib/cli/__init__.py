"""The ``synthbrain`` command line: the user's verbs (``generate``, ``labels``, ``image-from-labels``,
``insert-lesions``, ``batch``, ``models``). The developers' verbs (``train``, ``evaluate``, ``bench``,
...) are the separate ``synthbrain-dev`` command of the synthbrain-dev distribution.

One module per verb group registers its parsers beside its handlers (:mod:`.synthesis`,
:mod:`.batch`, :mod:`.models`); the flags they share are :mod:`.options`, the plumbing of running a
pipeline and writing its outputs :mod:`.running`, and the error and exit-status contract
:mod:`.command`: errors a user can cause end the program with one line on stderr (``synthbrain:
error: ...``) and exit status 2, without a traceback; nothing is written when the input is bad.

The command handlers import the library's torch-based modules (pipelines, store, outputs.io) inside
themselves, on purpose: importing torch takes seconds, and ``synthbrain --help`` or a mistyped
argument should answer without it. Only this face does that; inside the library, modules import each
other at the top (Testing/test_layers.py checks the import graph).
"""

from __future__ import annotations

import argparse
from typing import Sequence

from . import ageing, batch, models, synthesis
from .command import command_parser, run_command

#: The user's verb groups, in the order ``--help`` lists them.
VERBS = (synthesis, ageing, batch, models)


def build_parser() -> argparse.ArgumentParser:
    return command_parser(
        "synthbrain",
        "Synthesise brain MRI with published generative models. Every output is marked SYNTHETIC and carries its "
        "provenance.",
        VERBS,
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser(), argv)
