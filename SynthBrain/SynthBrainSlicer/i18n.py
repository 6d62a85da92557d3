"""Slicer's translation function for user-facing text.

Inside Slicer, ``_`` is ``slicer.i18n.tr`` (Slicer >= 5.4), so language packs can translate the
panel. Where Slicer's application is absent (pytest on slicer-core, which has no ``slicer.i18n``)
text is returned as is. Use named placeholders and ``.format()`` after translating, never
f-strings: ``tr`` drops a translation whose placeholders differ from the source text.
"""

from __future__ import annotations

try:
    from slicer.i18n import tr as _
except ImportError:  # outside the Slicer application

    def _(text: str) -> str:
        return text


__all__ = ["_"]
