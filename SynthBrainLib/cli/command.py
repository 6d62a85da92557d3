"""What every command of SynthBrain promises its user, whichever verb runs: a mistyped argument or a
bad input ends with one line on stderr (``PROG: error: ...``) and exit status 2, without a traceback;
Ctrl-C or a kill (SIGTERM) ends with one line and exit status 130. ``synthbrain`` and the developers'
``synthbrain-dev`` both run their verbs through :func:`run_command`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ..errors import SynthBrainError, SynthesisCancelled
from ..outputs.interrupts import terminate_as_interrupt
from .remedies import describe

EXIT_USER_ERROR = 2
EXIT_CANCELLED = 130


class CommandParser(argparse.ArgumentParser):
    """argparse with one-line errors (argparse prints the whole usage block by default)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def command_parser(prog: str, description: str, verbs: Sequence) -> CommandParser:
    """The parser of a command: ``--version``, ``--home`` (the model store) and its ``verbs``, modules
    whose ``register(subparsers)`` adds their parsers, each with its handler (``set_defaults(handler=...)``)
    beside it."""
    from .._version import __version__
    from .options import add_home

    parser = CommandParser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version=f"{prog} {__version__}")
    add_home(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=CommandParser)
    for module in verbs:
        module.register(sub)
    return parser


def run_command(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen verb's handler; returns the exit status.

    A handler may set ``cancelled`` (``set_defaults``) to what the cancel line says instead of
    "nothing was written".
    """
    args = parser.parse_args(argv)
    try:
        with terminate_as_interrupt():  # kill (SIGTERM) cleans up like Ctrl-C
            return args.handler(args)
    except SynthBrainError as exc:
        print(f"{parser.prog}: error: {describe(exc)}", file=sys.stderr)
        return EXIT_CANCELLED if isinstance(exc, SynthesisCancelled) else EXIT_USER_ERROR
    except KeyboardInterrupt:
        cancelled = getattr(args, "cancelled", None)
        print(f"{parser.prog}: {cancelled(args) if cancelled else 'cancelled; nothing was written'}", file=sys.stderr)
        return EXIT_CANCELLED
