"""The command line's words for the library's remedies (:class:`SynthBrainLib.errors.Remedy`)."""

from __future__ import annotations

from ..errors import Remedy, SynthBrainError


def _install(r: Remedy) -> str:
    if r.detail == "download":
        return f"run: synthbrain models download {r.model}"
    component = f" --component {r.component}" if r.component else ""
    return f"run: synthbrain models import PATH --model {r.model}{component}"


WORDS = {
    "overwrite": lambda r: "pass --overwrite to replace it",
    "allow_unverified": lambda r: "pass --allow-unverified to import your own weights anyway",
    "alignment_centre": lambda r: "use --alignment centre to move the labelled region onto the model grid",
    "verify_weights": lambda r: f"run: synthbrain models verify {r.model}",
    "more_precision": lambda r: "or try --precision float32",
    "install_weights": _install,
    "reinstall_weights": lambda r: f"delete it and {_install(r)}",
    "name_the_model": lambda r: "give --model ID (and --component NAME when the model has several weights)",
    "new_model_id": lambda r: "import it under an id of its own: --model NEW_ID",
    "other_home": lambda r: "choose another folder with --home or SYNTHBRAIN_HOME",
    "insert_lesions": lambda r: "to put lesions into a scan, run: synthbrain insert-lesions SCAN --lesions MASK ...",
    "accept_licence": lambda r: f"read it, then run: synthbrain models download {r.model} --accept-licence",
}


def describe(error: SynthBrainError) -> str:
    """The error's one line for the terminal: its message and, in flags, what to do."""
    if error.remedy is None:
        return error.message
    return f"{error.message}; {WORDS[error.remedy.action](error.remedy)}"
