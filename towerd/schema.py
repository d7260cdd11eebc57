"""Validate a YAML node tree against frozen dataclasses, reporting every problem at once.

The schema is the dataclasses themselves: field types say what is expected, field
metadata (made with :func:`spec`) adds the unit, the allowed range or pattern, and a
one-line description. Validation walks the node tree that ``yaml.compose`` builds, so
each message names the file, line and column, the dotted key path and what was
expected::

    towerd.yaml:42:7: tracking.gate_probability: 1.5 is out of range, expected 0.5..0.999999

Caught here, and never silently defaulted: unknown keys (with a "did you mean"),
duplicate keys (PyYAML would keep the last), wrong types, YAML 1.1 booleans where a
string is expected (``on``, ``no``), values out of range, missing required keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from towerd.errors import ConfigError

_STR_TAG = "tag:yaml.org,2002:str"
_NULL_TAG = "tag:yaml.org,2002:null"
_TAG_NAMES = {
    "tag:yaml.org,2002:bool": "a boolean",
    "tag:yaml.org,2002:int": "an integer",
    "tag:yaml.org,2002:float": "a number",
    _NULL_TAG: "null",
    _STR_TAG: "a string",
    "tag:yaml.org,2002:timestamp": "a timestamp",
}


def spec(
    default: Any = MISSING,
    *,
    doc: str = "",
    unit: str | None = None,
    lo: float | None = None,
    hi: float | None = None,
    pattern: str | None = None,
    settings_of: str | None = None,
    gt: float | None = None,
    error: str | None = None,
) -> Any:
    """A dataclass field with validation metadata.

    ``lo``/``hi``: inclusive numeric range; ``gt``: exclusive lower bound. ``pattern``:
    full-match regex for strings. ``settings_of``: this field is a driver's settings
    block, whose schema is the ``Settings`` dataclass of the driver named by the sibling
    key ``settings_of``. ``error``: any problem within this field is reported as this
    one message at the field (for a value whose parts mean nothing on their own).
    """
    meta = {"doc": doc, "unit": unit, "lo": lo, "hi": hi, "pattern": pattern, "settings_of": settings_of,
            "gt": gt, "error": error}
    if default is MISSING:
        return field(metadata=meta)
    if isinstance(default, (list, dict, set)) or dataclasses.is_dataclass(default):
        return field(default_factory=lambda d=default: d, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Problem:
    """One validation problem, located in the file."""

    line: int  # 1-based
    column: int  # 1-based
    path: str
    message: str

    def format(self, filename: str) -> str:
        where = f"{filename}:{self.line}:{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class _Invalid:
    """Marker for a value that failed validation (the problem is already recorded)."""


INVALID = _Invalid()


def _mark(node: Node) -> tuple[int, int]:
    """1-based (line, column) of ``node``; (0, 0) for a node built from data, not text."""
    if node.start_mark is None:
        return 0, 0
    return node.start_mark.line + 1, node.start_mark.column + 1


def _describe(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return f"{_TAG_NAMES.get(node.tag, node.tag)} {node.value!r}" if node.tag != _NULL_TAG else "null"


class Wording:
    """The words of the generic problems (towerd.yaml's). A kind of file whose users
    know other words for the same mistakes (scenario files) subclasses it; what is
    checked stays the same."""

    def not_mapping(self, node: Node, cls: type) -> str:
        return f"expected a mapping of {cls.__name__} keys, got {_describe(node)}"

    def required(self) -> str:
        return "required key is missing"

    def not_list(self, node: Node) -> str:
        return f"expected a list, got {_describe(node)}"

    def wrong_length(self, node: SequenceNode, n: int) -> str:
        return f"expected a list of {n} items, got {len(node.value)}"

    def not_choice(self, node: Node, choices: tuple) -> str:
        expected = ", ".join(repr(c) for c in choices)
        if not isinstance(node, ScalarNode):
            return f"expected one of {expected}, got {_describe(node)}"
        return f"{node.value!r} is not allowed, expected one of {expected}"

    def wrong_type(self, node: Node, tp: type) -> str:
        return f"expected {_TYPE_WORDS[tp]}, got {_describe(node)}"

    def not_finite(self, node: ScalarNode) -> str:
        return f"{node.value} is not a finite number"

    def out_of_range(self, node: ScalarNode, lo: float | None, hi: float | None, gt: float | None,
                     unit: str | None) -> str:
        unit_text = f" {unit}" if unit else ""
        if gt is not None:
            low = f"more than {_num(gt)}"
            return f"{node.value} is out of range, expected {low}" + (f" and at most {_num(hi)}" if hi is not None
                                                                    else "") + unit_text
        rng = f"{_num(lo) if lo is not None else '-inf'}..{_num(hi) if hi is not None else 'inf'}"
        return f"{node.value} is out of range, expected {rng}{unit_text}"


class Validator:
    """Builds dataclass instances from YAML nodes, collecting :class:`Problem` s.

    ``resolve_settings(driver_name)`` returns the Settings dataclass for a driver, or
    raises KeyError with a message for an unknown one. ``wording``: the words of the
    generic problems (default: towerd.yaml's).
    """

    def __init__(self, resolve_settings: Callable[[str], type] | None = None, wording: Wording | None = None) -> None:
        self.problems: list[Problem] = []
        self._resolve_settings = resolve_settings
        self._constructor = SafeConstructor()
        self._words = wording if wording is not None else Wording()

    def problem(self, node: Node, path: str, message: str) -> _Invalid:
        line, col = _mark(node)
        self.problems.append(Problem(line, col, path, message))
        return INVALID

    # -- entry points -------------------------------------------------------------

    def build(self, node: Node, tp: Any, path: str = "", meta: dict | None = None) -> Any:
        """Return a value of type ``tp`` built from ``node`` (INVALID after a problem)."""
        meta = meta or {}
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin in (typing.Union, types.UnionType):
            non_none = [a for a in args if a is not type(None)]
            if isinstance(node, ScalarNode) and node.tag == _NULL_TAG and len(non_none) < len(args):
                return None
            if len(non_none) == 1:
                return self.build(node, non_none[0], path, meta)
            lists = [a for a in non_none if typing.get_origin(a) is tuple]
            if len(non_none) == 2 and len(lists) == 1:  # one value or a list of them
                single = next(a for a in non_none if a is not lists[0])
                return self.build(node, lists[0] if isinstance(node, SequenceNode) else single, path, meta)
            raise TypeError(f"unsupported union {tp} at {path}")
        if dataclasses.is_dataclass(tp):
            return self._build_dataclass(node, tp, path)
        if origin is tuple:
            return self._build_tuple(node, args, path, meta)
        if origin is Literal:
            return self._build_choice(node, args, path)
        if tp in (str, int, float, bool):
            return self._build_scalar(node, tp, path, meta)
        raise TypeError(f"unsupported schema type {tp!r} at {path}")

    # -- structures ---------------------------------------------------------------

    def _build_dataclass(self, node: Node, cls: type, path: str) -> Any:
        if not isinstance(node, MappingNode):
            return self.problem(node, path, self._words.not_mapping(node, cls))
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        hints = typing.get_type_hints(cls)
        seen: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, ScalarNode) else None
            key_path = f"{path}.{key}" if path else str(key)
            if not isinstance(key, str) or key_node.tag != _STR_TAG:
                self.problem(key_node, path, f"keys must be strings, got {_describe(key_node)}")
                continue
            if key in seen:
                first_line, _ = _mark(seen[key][0])
                self.problem(key_node, key_path, f"duplicate key (first given at line {first_line})")
                continue
            seen[key] = (key_node, value_node)
            if key not in fields:
                hint = difflib.get_close_matches(key, list(fields), n=1)
                extra = f", did you mean {hint[0]!r}?" if hint else f"; known keys: {', '.join(fields)}"
                self.problem(key_node, key_path, f"unknown key{extra}")
        values: dict[str, Any] = {}
        failed = False
        for name, f in fields.items():
            field_path = f"{path}.{name}" if path else name
            if name not in seen:
                if f.default is MISSING and f.default_factory is MISSING:
                    self.problem(node, field_path, self._words.required())
                    failed = True
                continue
            value_node = seen[name][1]
            settings_of = f.metadata.get("settings_of")
            before = len(self.problems)
            if settings_of:
                value = self._build_settings(value_node, seen.get(settings_of), field_path)
            else:
                value = self.build(value_node, hints[name], field_path, dict(f.metadata))
            if value is INVALID and f.metadata.get("error") and len(self.problems) > before:
                del self.problems[before:]
                self.problem(value_node, field_path, f.metadata["error"])
            if value is INVALID:
                failed = True
            else:
                values[name] = value
        if failed:
            return INVALID
        try:
            return cls(**values)
        except (ValueError, TypeError) as exc:
            return self.problem(node, path, str(exc))

    def _build_settings(self, node: Node, driver_entry: tuple[Node, Node] | None, path: str) -> Any:
        if driver_entry is None or self._resolve_settings is None:
            return INVALID  # the missing driver key is reported on its own
        driver_node = driver_entry[1]
        if not isinstance(driver_node, ScalarNode):
            return INVALID
        try:
            settings_cls = self._resolve_settings(driver_node.value)
        except KeyError as exc:
            driver_path = path.rsplit(".", 1)[0] + ".driver" if "." in path else "driver"
            return self.problem(driver_node, driver_path, str(exc.args[0]))
        return self.build(node, settings_cls, path)

    def _build_tuple(self, node: Node, args: tuple, path: str, meta: dict) -> Any:
        if not isinstance(node, SequenceNode):
            return self.problem(node, path, self._words.not_list(node))
        if len(args) == 2 and args[1] is Ellipsis:
            item_types = [args[0]] * len(node.value)
        else:
            item_types = list(args)
            if len(node.value) != len(args):
                return self.problem(node, path, self._words.wrong_length(node, len(args)))
        items = [self.build(n, t, f"{path}[{i}]", meta) for i, (n, t) in enumerate(zip(node.value, item_types))]
        if any(item is INVALID for item in items):
            return INVALID
        return tuple(items)

    def _build_choice(self, node: Node, choices: tuple, path: str) -> Any:
        if not isinstance(node, ScalarNode):
            return self.problem(node, path, self._words.not_choice(node, choices))
        value = node.value if node.tag == _STR_TAG else self._construct(node, path)
        if value not in choices or type(value) is not type(choices[0]):
            return self.problem(node, path, self._words.not_choice(node, choices))
        return value

    # -- scalars ------------------------------------------------------------------

    def _construct(self, node: ScalarNode, path: str) -> Any:
        try:
            return self._constructor.construct_object(node, deep=True)
        except (ConstructorError, ValueError) as exc:
            return self.problem(node, path, f"cannot read value {node.value!r}: {exc}")

    def _build_scalar(self, node: Node, tp: type, path: str, meta: dict) -> Any:
        if not isinstance(node, ScalarNode):
            return self.problem(node, path, self._words.wrong_type(node, tp))
        if tp is str:
            if node.tag != _STR_TAG:
                return self.problem(
                    node, path, f"expected a string, got {_describe(node)} (quote it: \"{node.value}\")"
                )
            value: Any = node.value
            pattern = meta.get("pattern")
            if pattern and not re.fullmatch(pattern, value):
                return self.problem(node, path, f"{value!r} does not match the pattern {pattern}")
            return value
        if tp is float and node.tag == _STR_TAG and node.style is None and _YAML12_FLOAT.fullmatch(node.value):
            # YAML 1.1 (PyYAML) reads 1e-6 as a string: it needs a dot. YAML 1.2 and
            # every operator read it as a number, and so do we, when it is unquoted.
            value: Any = float(node.value)
        else:
            value = self._construct(node, path)
        if value is INVALID:
            return INVALID
        ok = (
            (tp is bool and isinstance(value, bool))
            or (tp is int and isinstance(value, int) and not isinstance(value, bool))
            or (tp is float and isinstance(value, (int, float)) and not isinstance(value, bool))
        )
        if not ok:
            return self.problem(node, path, self._words.wrong_type(node, tp))
        if tp is float:
            if isinstance(value, int) and abs(value) > 2**1000:
                return self.problem(node, path, f"{node.value[:40]}... is out of range for a number")
            value = float(value)
            if not math.isfinite(value):
                return self.problem(node, path, self._words.not_finite(node))
        lo, hi, gt = meta.get("lo"), meta.get("hi"), meta.get("gt")
        if tp is not bool and ((lo is not None and value < lo) or (hi is not None and value > hi)
                               or (gt is not None and not value > gt)):
            return self.problem(node, path, self._words.out_of_range(node, lo, hi, gt, meta.get("unit")))
        return value


_YAML12_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)")

_TYPE_WORDS = {str: "a string", int: "an integer", float: "a number", bool: "a boolean (true/false)"}


def _num(x: float) -> str:
    return f"{x:g}"


MAX_DEPTH = 32
"""Deepest nesting of mappings and lists accepted in a configuration file (towerd's own
schema needs about 8)."""
MAX_NODES = 100_000
"""Most nodes a configuration may hold once its aliases are expanded: an alias is a
copy of what its anchor names, so a few nested aliases ("billion laughs") would
otherwise make a small file validate for minutes and gigabytes."""


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose composer refuses nesting deeper than MAX_DEPTH (PyYAML composes
    recursively: a deep file would end in RecursionError)."""

    _depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.MarkedYAMLError(problem=f"nesting deeper than {MAX_DEPTH} levels", problem_mark=mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _expanded_size(root: Node, limit: int) -> int:
    """Nodes of the tree with every alias expanded (shared nodes counted once per use),
    computed over the composed graph without expanding it; stops past ``limit``."""
    sizes: dict[int, int] = {}
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:  # iterative post-order over the DAG
        node, done = stack.pop()
        if id(node) in sizes:
            continue
        if done:
            children = _children(node)
            sizes[id(node)] = min(limit + 1, 1 + sum(sizes[id(c)] for c in children))
            continue
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in sizes)
    return sizes[id(root)]


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, SequenceNode):
        return list(node.value)
    return []


def read_config_text(path: str | Path, max_bytes: int, what: str = "") -> tuple[str, bytes]:
    """The UTF-8 text and the bytes of a configuration file (or a ``what``, e.g.
    "scenario") of at most ``max_bytes`` (only that much is ever read); ConfigError
    naming the file otherwise."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(max_bytes + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read{' ' + what if what else ''}: {exc.strerror or exc}") from exc
    if len(raw) > max_bytes:
        raise ConfigError(f"{path}: larger than {max_bytes} bytes; not a {what or 'configuration file'}")
    try:
        return raw.decode("utf-8"), raw
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text: {exc}") from exc


def compose(text: str, filename: str) -> tuple[Node | None, list[Problem]]:
    """Parse YAML text into a node tree; a syntax error, nesting deeper than MAX_DEPTH
    or more than MAX_NODES nodes after alias expansion becomes a located Problem."""
    try:
        loader = _BoundedLoader(text)
        try:
            root = loader.get_single_node()
        finally:
            loader.dispose()
        if root is not None and _expanded_size(root, MAX_NODES) > MAX_NODES:
            return None, [Problem(1, 1, "", f"more than {MAX_NODES} values once aliases are expanded (nested "
                                  "aliases multiply: refused)")]
        return root, []
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = " ".join(s for s in (exc.context, exc.problem) if s)
        return None, [Problem(line, col, "", f"malformed YAML: {what}")]
    except yaml.YAMLError as exc:
        return None, [Problem(1, 1, "", f"malformed YAML: {exc}")]
