"""Exceptions raised by SynthBrainLib.

Every error a user can cause (a bad value, a missing model, a corrupt checkpoint) derives from
:class:`SynthBrainError` and carries a one-line message that names the offending value and what is
allowed. The CLI and the Slicer module show that message as is, without a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Remedy:
    """What the user can do about an error, as data: each face words it for its own users (the
    command line names its flags, the Slicer panel its buttons; ``str(error)`` gives the Python
    wording). ``action`` is one of :data:`REMEDIES`; ``model`` / ``component`` / ``detail`` fill it in.
    """

    action: str
    model: str | None = None
    component: str | None = None
    detail: str | None = None

    def in_python(self) -> str:
        """The remedy in the words of the Python API."""
        return REMEDIES[self.action](self)


def _install(r: Remedy) -> str:
    if r.detail == "download":
        return f"download them: ModelStore().download({r.model!r})"
    component = f", component={r.component!r}" if r.component else ""
    return f"import them: ModelStore().import_path(PATH, model={r.model!r}{component})"


#: remedy action -> its wording in the Python API (see the faces for theirs)
REMEDIES = {
    "overwrite": lambda r: "pass overwrite=True to replace it",
    "allow_unverified": lambda r: "pass allow_unverified=True to import your own weights anyway",
    "alignment_centre": lambda r: "use alignment='centre' to move the labelled region onto the model grid",
    "verify_weights": lambda r: f"check the weights with ModelStore().verify({r.model!r})",
    "more_precision": lambda r: "or load the pipeline with precision='float32'",
    "install_weights": _install,
    "reinstall_weights": lambda r: f"delete it and {_install(r)}",
    "name_the_model": lambda r: "give model=ID (and component=NAME when the model has several weights)",
    "new_model_id": lambda r: "import it under an id of its own: model='NEW_ID'",
    "other_home": lambda r: "choose another folder: ModelStore(home=...) or SYNTHBRAIN_HOME",
    "insert_lesions": lambda r: "to put lesions into a scan, use pipe.insert(scan, affine, lesions, sequence=...)",
    "accept_licence": lambda r: f"read it, then ModelStore().download({r.model!r}, accept_licence=True)",
}


class SynthBrainError(Exception):
    """Base class of all user-facing errors: the message is one line, shown verbatim.

    The one line is kept by the class itself: control characters that came in with user input
    (a newline in a file name or a card id, a terminal escape) are written as escapes (``\\n``), so
    that no message can span lines or fake output, whatever the raising code formatted into it.

    ``message`` says what is wrong, in no face's words; ``remedy`` (a :class:`Remedy` or None) says
    what to do, as data. ``str(error)`` is the message plus the remedy in the Python API's words.
    """

    def __init__(self, message: object = "", *args: object, remedy: Remedy | None = None) -> None:
        self.message = one_line(str(message))
        self.remedy = remedy
        super().__init__(self.message, *args)

    def __str__(self) -> str:
        return self.message if self.remedy is None else f"{self.message}; {self.remedy.in_python()}"


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
