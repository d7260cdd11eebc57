"""Readings and track records as JSON objects, one per line (like gpspipe -w).

Dataclasses become objects with a ``"type"`` key naming their class; NumPy structured
arrays become lists of objects keyed by field name; NaN and infinities (not JSON)
become null; ICD track records also carry the names of their enum values.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import numpy as np

from towerd.icd import Category, Status, Threat


def plural(n: int, word: str, words: str | None = None) -> str:
    """'1 sensor', '0 sensors', '2 sensors' (``words``: an irregular plural)."""
    return f"{n} {word}" if n == 1 else f"{n} {words or word + 's'}"


def jsonable(value: Any) -> Any:
    """A JSON-ready copy of ``value`` (see the module docstring)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {"type": type(value).__name__}
        for f in dataclasses.fields(value):
            out[f.name] = jsonable(getattr(value, f.name))
        return out
    if isinstance(value, np.ndarray):
        if value.dtype.names:
            names = value.dtype.names
            return [{n: jsonable(v) for n, v in zip(names, row)} for row in value.tolist()]
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.hex()
    return value


def _name(enum: type, value: int) -> str:
    try:
        return enum(value).name.lower()
    except ValueError:
        return str(value)


def track_records(records: np.ndarray) -> list[dict[str, Any]]:
    """ICD TRACKS records -> JSON objects: every field, plus status/category/threat names."""
    rows = jsonable(records)
    for row in rows:
        row["status_name"] = _name(Status, row["status"])
        row["category_name"] = _name(Category, row["category"])
        row["threat_name"] = _name(Threat, row["threat"])
    return rows


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)
