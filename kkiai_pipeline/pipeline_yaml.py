"""Reading a pipeline file as bounded, strict YAML, so that no file can hang, exhaust or crash the tool.

A pipeline file is small: it is refused when it is larger than ``MAX_FILE_BYTES``, nests deeper than
``MAX_DEPTH``, or describes more than ``MAX_EXPANDED`` (scalar characters plus one per node) once its
aliases are expanded (a "billion laughs" file is tiny on disk and huge in memory). Duplicate keys, keys
that YAML does not read as strings, and YAML types a config cannot hold (sets, binary) are errors;
timestamps stay the text the user wrote. ``${...}`` interpolations are OmegaConf's: one whose resolved
value would exceed the same budget, that refers back to itself, or that chains deeper than
``MAX_INTERPOLATION_DEPTH`` is refused before OmegaConf sees it. Every error is a YAMLProblem carrying
the line when the file has one for it.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_FILE_BYTES = 4_000_000
MAX_EXPANDED = 4_000_000
MAX_DEPTH = 64
MAX_INTERPOLATION_DEPTH = 16
MAX_INT_BITS = 13_280  # 4,000 decimal digits: under Python's int_max_str_digits, so it can be printed
_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"


@dataclass(frozen=True)
class YAMLProblem(Exception):
    """What is wrong with a pipeline file; ``line`` (1-based) when known, ``field`` a dotted key path."""

    message: str
    line: int | None = None
    field: str | None = None

    def __str__(self) -> str:
        return self.message


def read_text(path: Path, *, max_bytes: int = MAX_FILE_BYTES) -> str:
    """The text of a regular file of at most ``max_bytes``; raises YAMLProblem otherwise."""
    try:
        # O_NONBLOCK: opening a FIFO named like a pipeline must not wait for a writer.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except (OSError, ValueError) as exc:
        raise YAMLProblem(f"cannot read the file: {_os_reason(exc)}") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # a directory, FIFO or device named like a pipeline
        os.close(fd)
        raise YAMLProblem("not a regular file")
    with os.fdopen(fd, "rb") as handle:
        try:
            data = handle.read(max_bytes + 1)  # the bytes read count, not st_size (0 on procfs)
        except OSError as exc:
            raise YAMLProblem(f"cannot read the file: {_os_reason(exc)}") from exc
    if len(data) > max_bytes:
        raise YAMLProblem(
            f"the file is larger than {max_bytes:,} bytes; a pipeline file is refused above that"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise YAMLProblem(f"not UTF-8 text (byte 0x{data[exc.start]:02x})", line=line) from exc


def _os_reason(exc: Exception) -> str:
    return exc.strerror or str(exc) if isinstance(exc, OSError) else str(exc)


def load(text: str) -> Any:
    """The data of one YAML document, bounded and strict; raises YAMLProblem."""
    try:
        return _load(text, _Loader)
    except YAMLProblem:
        if _Loader is _PyLoader:
            raise
    # libyaml's messages are terser than PyYAML's: on an error, say it the way PyYAML does. The depth
    # check runs again first, so the Python composer (which recurses) never sees deep nesting.
    return _load(text, _PyLoader)


def _reason(exc: yaml.MarkedYAMLError) -> str:
    # "while parsing a flow node" adds nothing; "expected a single document" is half the sentence.
    context = exc.context if exc.context and not exc.context.startswith("while ") else None
    parts = [p for p in (context, exc.problem) if p]
    return ", ".join(parts) or "invalid YAML"


def _load(text: str, loader_class: type[Any]) -> Any:
    loader = None
    try:
        _check_depth(text, loader_class)  # before composing, which recurses once per level
        loader = loader_class(text)
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise YAMLProblem(_reason(exc), line=line) from exc
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise YAMLProblem(f"unacceptable character #x{code:04x}: {exc.reason}", line=line) from exc
    except yaml.YAMLError as exc:
        raise YAMLProblem(str(exc)) from exc
    except RecursionError as exc:  # defence in depth: MAX_DEPTH stops nesting long before this
        raise YAMLProblem(f"the YAML nests too deeply (more than {MAX_DEPTH} levels)") from exc
    finally:
        if loader is not None:
            loader.dispose()


class _Checks(yaml.constructor.SafeConstructor):
    """SafeConstructor with duplicate-key and key-type checks and config-safe types."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> Any:
        seen: dict[str, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            if not isinstance(key_node, ScalarNode):  # e.g. an unquoted {{ ... }} (see _quote_hint)
                raise ConstructorError(None, None, "found unhashable key", key_node.start_mark)
            if key_node.tag != _STR_TAG:
                shown = key_node.value
                raise ConstructorError(
                    None,
                    None,
                    f"the key {_short(str(shown))!r} is not a string (quote it)",
                    key_node.start_mark,
                )
            if key_node.value in seen:
                raise ConstructorError(
                    None,
                    None,
                    f"duplicate key {_short(key_node.value)!r} (first on line {seen[key_node.value]})",
                    key_node.start_mark,
                )
            seen[key_node.value] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: ScalarNode) -> Any:
        try:
            value = super().construct_yaml_int(node)
        except ValueError as exc:  # e.g. more digits than Python converts (int_max_str_digits)
            raise ConstructorError(None, None, f"cannot read the integer: {exc}", node.start_mark) from exc
        if value.bit_length() > MAX_INT_BITS:  # 0x/0b numbers escape that limit, but not printing
            raise ConstructorError(None, None, "the integer has more than 4,000 digits", node.start_mark)
        return value

    def construct_yaml_float(self, node: ScalarNode) -> Any:
        try:
            return super().construct_yaml_float(node)
        except (ValueError, OverflowError) as exc:
            raise ConstructorError(None, None, f"cannot read the number: {exc}", node.start_mark) from exc

    def construct_text(self, node: ScalarNode) -> str:
        # A date stays the text the user wrote: configs hold no dates, and 2024-13-45 must not crash.
        return str(self.construct_scalar(node))

    def construct_unsupported(self, node: Node) -> Any:
        raise ConstructorError(
            None, None, f"the YAML type {node.tag} is not supported in a pipeline file", node.start_mark
        )


class _PyLoader(_Checks, yaml.SafeLoader):
    """The pure-Python loader, with the checks."""


# libyaml when installed (ten times faster); the constructor, where the checks are, is Python in both.
_Loader: type[Any] = _PyLoader
if hasattr(yaml, "CSafeLoader"):

    class _CLoader(_Checks, yaml.CSafeLoader):
        """libyaml's parser, with the checks."""

    _Loader = _CLoader

# The base classes registered their own functions by tag: the overrides take effect once registered.
_OVERRIDES: dict[str, Any] = {
    "int": _Checks.construct_yaml_int,
    "float": _Checks.construct_yaml_float,
    "timestamp": _Checks.construct_text,
    **dict.fromkeys(("set", "binary", "omap", "pairs"), _Checks.construct_unsupported),
}
_class: Any
for _class in (_PyLoader, _Loader):
    for _tag, _constructor in _OVERRIDES.items():
        _class.add_constructor(f"tag:yaml.org,2002:{_tag}", _constructor)


def _check_depth(text: str, loader_class: type[Any]) -> None:
    """Refuse nesting deeper than MAX_DEPTH, reading the event stream (which does not recurse)."""
    events = loader_class(text)
    try:
        depth = 0
        while events.check_event():
            event = events.get_event()
            if isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    message = f"nesting deeper than {MAX_DEPTH} levels"
                    raise ComposerError(None, None, message, event.start_mark)  # type: ignore[arg-type]
            elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
                depth -= 1
    finally:
        events.dispose()


def _check_expansion(root: Node) -> None:
    """Refuse a document whose aliases expand past MAX_EXPANDED, or that contains itself."""
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            size[key] = 1 + sum(size[id(child)] for child in _children(node))
            if size[key] > MAX_EXPANDED:
                raise ConstructorError(
                    None,
                    None,
                    f"the document expands to more than {MAX_EXPANDED:,} characters (aliases)",
                    node.start_mark,
                )
            continue
        if key in size:
            continue
        if isinstance(node, ScalarNode):
            size[key] = len(node.value) + 1
            continue
        if key in on_path:
            raise ConstructorError(
                None, None, "an alias refers to its own anchor (recursive)", node.start_mark
            )
        on_path.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in on_path:
                raise ConstructorError(
                    None, None, "an alias refers to its own anchor (recursive)", child.start_mark
                )
            if id(child) not in size:
                stack.append((child, False))


def _children(node: Node) -> Iterator[Node]:
    if isinstance(node, SequenceNode):
        yield from node.value
    elif isinstance(node, MappingNode):
        for key, value in node.value:
            yield key
            yield value


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- ${...} interpolations ----------------------------------------------------------------------------

_INNERMOST = re.compile(r"\$\{([^${}]*)\}")
_SELECTING_RESOLVERS = ("oc.select", "oc.dict.keys", "oc.dict.values")
Path_ = tuple[Any, ...]


def check_interpolations(data: Mapping[str, Any], *, package: str = "pipeline") -> None:
    """Refuse interpolations whose resolution would be huge, circular or too deep (raises YAMLProblem).

    ``data`` is the pipeline node; it sits at ``package`` in the composed config, so an absolute
    ``${pipeline.params.x}`` points into it. References that leave the node cost a constant (the rest of
    the config is ours), references to missing keys are left to OmegaConf's own message.
    """
    nodes: dict[Path_, Any] = {}
    _flatten(data, (), nodes)
    if not any(isinstance(v, str) and "${" in v for v in nodes.values()):
        return
    cost: dict[Path_, int] = {}
    depth: dict[Path_, int] = {}
    for start in nodes:
        if start in cost:
            continue
        on_path: set[Path_] = set()
        stack: list[tuple[Path_, bool]] = [(start, False)]
        while stack:
            path, deps_done = stack.pop()
            deps = _dependencies(path, nodes, package)
            if deps_done:
                on_path.discard(path)
                own = len(nodes[path]) if isinstance(nodes[path], str) else 1
                cost[path] = own + sum(cost[d] for d in deps)
                interpolated = isinstance(nodes[path], str) and "${" in nodes[path]
                depth[path] = max((depth[d] for d in deps), default=0) + (1 if interpolated else 0)
                if cost[path] > MAX_EXPANDED:
                    raise YAMLProblem(
                        f"the interpolations expand to more than {MAX_EXPANDED:,} characters",
                        field=_dotted(path),
                    )
                if depth[path] > MAX_INTERPOLATION_DEPTH:
                    raise YAMLProblem(
                        f"interpolations chain more than {MAX_INTERPOLATION_DEPTH} deep", field=_dotted(path)
                    )
                continue
            if path in cost:
                continue
            on_path.add(path)
            stack.append((path, True))
            for dep in deps:
                if dep in on_path:
                    raise YAMLProblem("an interpolation refers back to itself", field=_dotted(dep))
                if dep not in cost:
                    stack.append((dep, False))


def _flatten(data: Any, path: Path_, nodes: dict[Path_, Any]) -> None:
    stack = [(data, path)]
    while stack:
        value, where = stack.pop()
        nodes[where] = value
        if isinstance(value, Mapping):
            stack += [(v, (*where, str(k))) for k, v in value.items()]
        elif isinstance(value, list):
            stack += [(v, (*where, i)) for i, v in enumerate(value)]


def _dependencies(path: Path_, nodes: Mapping[Path_, Any], package: str) -> list[Path_]:
    value = nodes[path]
    if isinstance(value, Mapping):
        return [(*path, str(k)) for k in value]
    if isinstance(value, list):
        return [(*path, i) for i in range(len(value))]
    if not isinstance(value, str) or "${" not in value:
        return []
    found = []
    for body in _INNERMOST.findall(value):
        for ref in _references(body):
            target = _target(ref, path, package, nodes)
            if target is not None:
                found.append(target)
    return found


def _references(body: str) -> list[str]:
    name, colon, args = body.partition(":")
    if not colon:
        return [body.strip()]
    if name.strip() in _SELECTING_RESOLVERS:
        return [args.split(",")[0].strip()]
    return []


def _target(ref: str, path: Path_, package: str, nodes: Mapping[Path_, Any]) -> Path_ | None:
    """The node ``ref`` names, seen from the value at ``path``; None when outside the pipeline."""
    dots = len(ref) - len(ref.lstrip("."))
    parts = [p for p in re.split(r"[.\[\]]+", ref[dots:]) if p]
    if dots:
        if dots > len(path):
            return None
        target: Path_ = path[: len(path) - dots]
    else:
        if not parts or parts[0] != package:
            return None
        target, parts = (), parts[1:]
    for part in parts:  # list items are numbered, mapping keys are strings
        target = (*target, int(part) if isinstance(nodes.get(target), list) and part.isdigit() else part)
        if target not in nodes:
            return None
    return target


def _dotted(path: Path_) -> str:
    return ".".join(str(p) for p in path) or "(the file)"


def interpolated(data: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(dotted key, value) of every string holding ``${``."""
    nodes: dict[Path_, Any] = {}
    _flatten(data, (), nodes)
    for path, value in nodes.items():
        if isinstance(value, str) and "${" in value:
            yield _dotted(path), value
