"""Received JSON bodies of the ICD (EVENTS, HEALTH, ERROR: docs/protocol.md) parsed total
and bounded, and :class:`MessageError`, the error of any received message that violates
the ICD (here so that this module and :mod:`towerd.icd` both raise it). Pure."""

from __future__ import annotations

import json
import re

from towerd.errors import FrameError

MAX_JSON_DEPTH = 32
"""Deepest nesting of arrays and objects accepted in a received JSON body (the ICD's
bodies need 3 or 4 levels; a deeper one is refused, reason ``json_depth``)."""
MAX_JSON_NODES = 200_000
"""Most JSON values (object keys count too) accepted in one received body (reason
``json_size``); a receiver may set a lower bound (the central's HEALTH key limit)."""
_MAX_INT_DIGITS = 20
"""A JSON integer of more digits cannot be a u64 or an i64 (reason ``json``)."""
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
"""NUL (PostgreSQL text cannot hold it) and lone surrogates (not UTF-8: SQLite and
PostgreSQL refuse to store them; ``json.loads`` accepts ``\\ud800`` escapes)."""


class MessageError(FrameError):
    """A received message violates ICD v1. ``reason`` is a short stable key (``short``,
    ``magic``, ``version``, ``type``, ``flags``, ``count``, ``size``, ``stream_id``,
    ``seq``, ``ack_range``, ``encoding``, ``json``, ``json_depth``, ``json_size``,
    ``json_shape``, ``event_fields``, ``range``) for
    counters and rate-limited logs; ``str()`` gives the precise detail."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise ValueError(f"integer of {len(text)} digits is out of range")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def parse_json(body: bytes, what: str, max_nodes: int = MAX_JSON_NODES) -> object:
    """Parse a received JSON body, total and bounded: every failure is a MessageError
    (``encoding``, ``json``, ``json_depth``, ``json_size``), never another exception.
    Refused besides invalid JSON: nesting deeper than MAX_JSON_DEPTH, more than
    ``max_nodes`` values, integers beyond 20 digits, numbers that overflow a double,
    NaN/Infinity, and strings (keys too) holding NUL or a lone surrogate."""
    try:
        obj = json.loads(body.decode("utf-8"), parse_constant=_reject_constant, parse_int=_bounded_int,
                         parse_float=_finite_float)
    except UnicodeDecodeError as exc:
        raise MessageError("encoding", f"{what} body is not UTF-8: {exc}") from None
    except RecursionError:
        raise MessageError("json_depth", f"{what} body nests deeper than {MAX_JSON_DEPTH}") from None
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        raise MessageError("json", f"{what} body is not valid JSON: {str(exc)[:200]}") from None
    check_tree(obj, what, max_nodes)
    return obj


def check_tree(obj: object, what: str, max_nodes: int) -> None:
    """Walk a parsed JSON value without recursion: depth, size and storable strings."""
    stack = [(obj, 1)]
    nodes = 0
    while stack:
        value, depth = stack.pop()
        nodes += 1
        if nodes > max_nodes:
            raise MessageError("json_size", f"{what} body holds more than {max_nodes} values")
        if isinstance(value, str):
            if _UNSTORABLE.search(value):
                raise MessageError("encoding", f"{what} body has a string with NUL or a lone surrogate")
        elif isinstance(value, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise MessageError("json_depth", f"{what} body nests deeper than {MAX_JSON_DEPTH}")
            if isinstance(value, dict):
                nodes += len(value)
                for key in value:
                    if _UNSTORABLE.search(key):
                        raise MessageError("encoding", f"{what} body has a key with NUL or a lone surrogate")
                stack.extend((v, depth + 1) for v in value.values())
            else:
                stack.extend((v, depth + 1) for v in value)
