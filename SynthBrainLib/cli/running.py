"""The plumbing every synthesis verb shares: the request checked before torch is imported, the
pipeline loaded and run behind a progress bar, and the outputs written all or nothing.

The library's torch-based modules (pipelines, outputs.io) are imported inside these functions, on
purpose: importing torch takes seconds, and ``--help`` or a mistyped argument should answer without it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Mapping

from ..errors import OutputError, SynthBrainError


class Progress:
    """tqdm bar driven by the pipelines' ``progress(step, total)`` callback."""

    def __init__(self, enabled: bool, desc: str) -> None:
        self.enabled, self.desc, self.bar = enabled, desc, None

    def __call__(self, step: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=self.desc, unit="step", file=sys.stderr)
        self.bar.update(step - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def log(line: str) -> None:
    """A progress line of a long run, on stderr (stdout holds what the command made)."""
    print(line, file=sys.stderr, flush=True)


def open_store(args):
    """The model store of ``--home`` (or ``$SYNTHBRAIN_HOME``)."""
    from ..models.store import ModelStore

    return ModelStore(home=args.home)


def planned_outputs(args, partial_volumes: str | None = None, labels: str | None = None) -> None:
    """Every file the verb will write (``-o`` and its sidecar, ``--preview``, ...) can be written and
    is not there already unless ``--overwrite``: checked before any work."""
    from ..outputs.io import ensure_writable, output_paths

    paths = output_paths(args.output, partial_volumes=partial_volumes, labels=labels)
    if args.preview:
        if not args.preview.lower().endswith(".png"):
            raise OutputError(f"preview file {args.preview!r} must end in .png")
        paths.append(Path(args.preview))
    ensure_writable(paths, args.overwrite)


def check_args(
    args,
    kind,
    values: Mapping[str, Any] | None = None,
    raw: Mapping[str, Any] | None = None,
    image: Mapping[str, Any] | None = None,
):
    """Every check that needs only the model's card, before torch is imported (seconds): the option
    names, the model exists and is complete, of the verb's kind; conditions, sampler, steps, guidance,
    seed and sequence fit it, and the modality and grid of a model that takes them (``image``)
    (:func:`~SynthBrainLib.models.requests.check_request`). Returns the card."""
    from ..models.requests import check_device_options, check_request

    check_device_options(args.device, args.precision, args.decode)
    if args.preview_steps is not None and args.preview_steps < 1:
        raise SynthBrainError(f"--preview-steps {args.preview_steps} must be at least 1")
    store = open_store(args)
    # The request is checked against the card before the weights are looked for: a wrong value is
    # answered as such whether or not the model is installed yet.
    card = store.locate(args.model, require_complete=False).card
    check_request(
        card,
        kind=kind,
        verb=args.command,
        conditions=values,
        raw=raw,
        sampler=getattr(args, "sampler", None),
        steps=getattr(args, "steps", None),
        preset=args.preset,
        guidance=getattr(args, "guidance", None),
        seed=args.seed,
        sequence=getattr(args, "sequence", None),
        **(image or {}),
    )
    store.locate(args.model)  # installed and complete
    return card


def run_pipeline(
    args,
    kind,
    call: Callable[[Any, Progress], Any],
    values: Mapping[str, Any] | None = None,
    raw: Mapping[str, Any] | None = None,
    image: Mapping[str, Any] | None = None,
):
    """Check the request (:func:`check_args`), load the model's pipeline and run ``call(pipe,
    progress)`` behind a progress bar; returns (pipeline, result)."""
    card = check_args(args, kind, values, raw, image)
    from ..pipelines import load_pipeline  # torch: only once the request is known to be sound

    pipe = load_pipeline(
        args.model,
        device=args.device,
        store=open_store(args),
        preset=args.preset,
        precision=args.precision,
        decode=args.decode,
    )
    if args.preview_steps is not None:
        limit = card.sampling.max_steps if card.sampling is not None else 1
        if args.preview_steps > limit:
            raise SynthBrainError(
                f"--preview-steps {args.preview_steps} is outside 1–{limit} (the most {card.id} allows)"
            )
        pipe.preview_steps = args.preview_steps
    progress = Progress(not args.quiet, card.id)
    from ..extraction.weights import weights_home

    try:
        with weights_home(args.home):  # --home holds the brain extractor's weights too
            result = call(pipe, progress)
    finally:
        progress.close()
    return pipe, result


def write_outputs(args, result, partial_volumes: str | None = None, labels: str | None = None) -> int:
    """Write the result (``-o``, its sidecar, the extra volumes named) and ``--preview``, all or
    nothing: a failed write removes what this run wrote. Prints each path written."""
    from ..outputs.io import output_paths

    existed = {p for p in output_paths(args.output, partial_volumes=partial_volumes, labels=labels) if p.exists()}
    written = result.save(args.output, overwrite=args.overwrite, partial_volumes=partial_volumes, labels=labels)
    if args.preview:
        from ..outputs.preview import montage, preview_zoom, write_png

        volume = result.image if result.image is not None else result.labels
        try:
            written.append(
                write_png(args.preview, montage([volume], zoom=preview_zoom(result.affine)), overwrite=args.overwrite)
            )
        except BaseException:
            for path in written:  # all or nothing, as for the volumes themselves
                if path not in existed:
                    path.unlink(missing_ok=True)
            raise
    for path in written:
        print(path)
    return 0
