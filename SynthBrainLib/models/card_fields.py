"""Reading a card's JSON: typed fields whose errors name the card and the field, e.g. ``card
brain-ldm: field 'output.spacing' must be 3 positive numbers, got [1, 1]``."""

from __future__ import annotations

import json
import math
from typing import Any, Iterable

from ..errors import CardError


class FieldReader:
    """Reads typed fields from a JSON object; errors name ``card <id>: field '<path>'``."""

    def __init__(self, data: Any, path: str, card_id: str) -> None:
        self.card_id = card_id
        self.path = path
        if not isinstance(data, dict):
            self.fail("", f"must be an object, got {shown(data)}")
        self.data: dict = data

    def fail(self, key: str, message: str) -> None:
        where = ".".join(p for p in (self.path, key) if p)
        raise CardError(f"card {self.card_id}: field '{where}' {message}")

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def raw(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def _get(self, key: str, required: bool, default: Any) -> Any:
        if key not in self.data or self.data[key] is None:
            if required:
                self.fail(key, "is required")
            return default
        return self.data[key]

    def str(
        self, key: str, required: bool = True, default: str | None = None, choices: Iterable[str] | None = None
    ) -> str | None:
        if self.data.get(key) is None:
            return self._get(key, required, default)
        value = self.data[key]
        if not isinstance(value, str) or not value.strip():
            self.fail(key, f"must be a non-empty string, got {shown(value)}")
        if choices is not None and value not in choices:
            self.fail(key, f"must be one of {', '.join(choices)}, got {shown(value)}")
        return value

    def number(
        self, key: str, required: bool = True, default: float | None = None, positive: bool = False
    ) -> float | None:
        value = self._get(key, required, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.fail(key, f"must be a finite number, got {shown(value)}")
        if positive and value <= 0:
            self.fail(key, f"must be positive, got {shown(value)}")
        return float(value)

    def integer(
        self, key: str, required: bool = True, default: int | None = None, minimum: int | None = None
    ) -> int | None:
        value = self._get(key, required, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"must be an integer, got {shown(value)}")
        if minimum is not None and value < minimum:
            self.fail(key, f"must be at least {minimum}, got {value}")
        return value

    def boolean(self, key: str, required: bool = True, default: bool | None = None) -> bool | None:
        value = self._get(key, required, default)
        if value is None:
            return None
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false, got {shown(value)}")
        return value

    def numbers(
        self, key: str, length: int | None = None, positive: bool = False, integer: bool = False, required: bool = True
    ) -> tuple | None:
        value = self._get(key, required, None)
        if value is None:
            return None
        what = f"{length} " if length else ""
        kind = "positive " if positive else ""
        kind += "integers" if integer else "numbers"
        ok = isinstance(value, list) and (length is None or len(value) == length) and len(value) > 0
        if ok:
            for v in value:
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    ok = False
                elif integer and not isinstance(v, int):
                    ok = False
                elif positive and v <= 0:
                    ok = False
        if not ok:
            self.fail(key, f"must be a list of {what}{kind}, got {shown(value)}")
        return tuple(int(v) if integer else float(v) for v in value)

    def obj(self, key: str, required: bool = True) -> "FieldReader | None":
        value = self._get(key, required, None)
        if value is None:
            return None
        return FieldReader(value, ".".join(p for p in (self.path, key) if p), self.card_id)

    def objects(self, key: str, required: bool = True) -> list["FieldReader"]:
        value = self._get(key, required, [])
        if not isinstance(value, list):
            self.fail(key, f"must be a list of objects, got {shown(value)}")
        base = ".".join(p for p in (self.path, key) if p)
        return [FieldReader(v, f"{base}[{i}]", self.card_id) for i, v in enumerate(value)]

    def mapping(self, key: str, required: bool = True) -> dict | None:
        value = self._get(key, required, None)
        if value is None:
            return None
        if not isinstance(value, dict):
            self.fail(key, f"must be an object, got {shown(value)}")
        return value


def shown(value: Any) -> str:
    """A value as an error message quotes it: JSON (text in quotes), cut to 60 characters."""
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def printable(text: str) -> bool:
    """No control characters (NUL, newlines, escapes): they cut or fake file names and log lines."""
    return all(ch.isprintable() for ch in text)
