"""Exceptions raised by SynthBrainLib.

Every error a user can cause (a bad value, a missing model, a corrupt checkpoint) derives from
:class:`SynthBrainError` and carries a one-line message that names the offending value and what is
allowed. The CLI and the Slicer module show that message as is, without a traceback.
"""

from __future__ import annotations


class SynthBrainError(Exception):
    """Base class of all user-facing errors: the message is one line, shown verbatim.

    The one line is kept by the class itself: control characters that came in with user input
    (a newline in a file name or a card id, a terminal escape) are written as escapes (``\\n``), so
    that no message can span lines or fake output, whatever the raising code formatted into it.
    """

    def __init__(self, message: object = "", *args: object) -> None:
        super().__init__(one_line(str(message)), *args)


def one_line(text: str) -> str:
    """``text`` with every non-printable character (newlines, escapes, lone surrogates) escaped."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


class CardError(SynthBrainError):
    """A model card is malformed: the message names the field."""


class ConditionError(SynthBrainError, ValueError):
    """A conditioning value is unknown or outside the card's range."""


class ModelNotFoundError(SynthBrainError):
    """No card or no installed weights for the requested model."""


class CheckpointError(SynthBrainError):
    """A checkpoint cannot be read, fails its checksum, or does not fit the network."""


class DeviceError(SynthBrainError):
    """The requested device is unknown or not available."""


class OutputError(SynthBrainError):
    """An output path is invalid or would overwrite an existing file."""


class SynthesisCancelled(SynthBrainError):
    """Raised inside a pipeline call when its cancel flag is set; nothing is returned or written."""

    def __init__(self, message: str = "synthesis cancelled") -> None:
        super().__init__(message)
