"""YAML documents turned into plain data plus the source line of every field, within limits.

Returns the Python value together with a map from field path (a tuple of keys and
indexes) to its 1-based line, so validation can name the exact line of a bad field.
Plain documents (no anchors, aliases or explicit tags: every model we write) are built
from libyaml's event stream by :mod:`dcnet.model.yamlevents`, without PyYAML's node tree
(docs/metrics.md, "Memory, the loader child"), and their lines are
recorded only when first asked for (a second pass: only a model with problems asks).
Any other document, and any document with a problem, is composed into PyYAML's node
tree and walked once, as before; that walk words every error, so both paths give the
same data, lines and messages (tests/unit/test_yamlevents.py compares them).

The text is hostile until proven otherwise, so the walk is bounded (:class:`Limits`):
nesting depth, items in one list or mapping, characters in one scalar, nodes in the
document, and what aliases may add. An aliased collection is walked once and its value
shared (so a "billion laughs" costs what its text costs), and the nodes it stands for
are counted against the alias budget: at most ``alias_floor`` nodes, or as many as the
document writes out, whichever is larger. An alias inside its own anchor (a loop) is
refused. Merge keys (``<<: *defaults``) are honoured with explicit keys winning.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import yaml

from dcnet.model import yamlevents

Path = tuple[str | int, ...]
# libyaml's parser when PyYAML was built with it (Debian's and PyPI's wheels are): the
# pure-Python scanner dominates loading a large model otherwise. libyaml itself refuses
# nesting deeper than 1,000 levels, so composing never recurses without bound.
_FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_COLLECTION_TAGS = frozenset({"tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"})


@dataclass(frozen=True)
class Limits:
    """Bounds on one YAML document (defaults fit a 70,000-service model)."""

    max_depth: int = 32              # nested lists/mappings
    max_items: int = 200_000         # entries of one list or mapping
    max_string: int = 4096           # characters of one scalar (keys included)
    max_nodes: int = 4_000_000       # nodes written out in the document
    alias_floor: int = 100_000       # nodes aliases may add, at least


DEFAULT_LIMITS = Limits()


class YAMLSourceError(ValueError):
    """The text is not valid YAML, holds a duplicate key or breaks a limit; names source,
    line and (when known) the field path."""

    def __init__(self, source: str, line: int | None, message: str, path: Path = ()):
        self.source, self.line, self.path, self.message = source, line, path, message
        where = source if line is None else f"{source}:{line}"
        super().__init__(f"{where}: {message}")


class LocatedData:
    """A parsed document and the line of each field path inside it (``lines``; made by
    ``record()`` when first read, if given). ``unshared``: no list or mapping appears
    twice in ``data`` (no aliases), so a reader may drop each part once read."""

    def __init__(self, data: object, source: str, lines: dict[Path, int] | None = None,
                 record: Callable[[], dict[Path, int]] | None = None, unshared: bool = False):
        self.data, self.source, self.unshared = data, source, unshared
        self._lines, self._record = lines if lines is not None or record else {}, record

    @property
    def lines(self) -> dict[Path, int]:
        if self._lines is None:
            self._lines, self._record = self._record(), None
        return self._lines

    def line_of(self, path: Path) -> int | None:
        """The line of ``path``, or of its nearest ancestor that has one."""
        while True:
            if path in self.lines:
                return self.lines[path]
            if not path:
                return None
            path = path[:-1]


def load_located(text: str, source: str, limits: Limits = DEFAULT_LIMITS,
                 services=None) -> LocatedData:
    """Parse one YAML document (safe tags only) and record field lines; ``services``: as
    :func:`dcnet.model.yamlevents.build` takes it (not called on the composed path)."""
    try:
        data = yamlevents.build(text, limits, services=services)
    except yamlevents.Unsupported:
        return load_composed(text, source, limits)

    def record() -> dict[Path, int]:     # the same pass again, with the lines
        lines: dict[Path, int] = {}
        yamlevents.build(text, limits, lines)
        return lines
    return LocatedData(data, source, record=record, unshared=True)


def load_composed(text: str, source: str, limits: Limits = DEFAULT_LIMITS,
                  services=None) -> LocatedData:
    """:func:`load_located` through PyYAML's node tree: any document, every error
    (``services`` is not called: the raw services are read later)."""
    try:
        node = yaml.compose(text, Loader=_FAST_LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise YAMLSourceError(source, line, f"invalid YAML: {exc.problem}") from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1 if exc.position >= 0 else None
        raise YAMLSourceError(source, line, f"invalid YAML: character {exc.character!r} "
                              f"at offset {exc.position}: {exc.reason}") from None
    except yaml.YAMLError as exc:
        raise YAMLSourceError(source, None, f"invalid YAML: {exc}") from None
    located = LocatedData(data=None, source=source)
    if node is None:
        return located
    walker = _Walker(located, limits)
    located.lines[()] = node.start_mark.line + 1
    located.data = walker.walk(node, (), 0)
    return located


class _Walker:
    """One bounded walk over a composed node graph (which aliases may make a DAG or,
    with an alias inside its anchor, cyclic).

    _drop_marks: each node's start and end marks are dropped once its line is recorded;
    they are half of what the composed graph costs (a 1 MiB model of tiny mappings: 64
    of 129 MB), so the walk's output grows while the graph shrinks. A node reached again
    through an alias has no marks, and its line is its path's."""

    def __init__(self, located: LocatedData, limits: Limits):
        self.located, self.limits = located, limits
        self.lines = located.lines
        self.constructor = yaml.SafeLoader("")
        self.done: dict[int, tuple[object, int]] = {}   # id(collection node) -> value, size
        self.active: set[int] = set()                  # collections being walked
        self.nodes = 0                                 # nodes written out, walked once
        self.aliased = 0                               # nodes aliases stand for

    def fail(self, node: yaml.Node, path: Path, message: str) -> YAMLSourceError:
        mark = node.start_mark
        line = mark.line + 1 if mark is not None else self.located.line_of(path)
        return YAMLSourceError(self.located.source, line, message, path)

    def fail_at(self, path: Path, message: str) -> YAMLSourceError:
        """A problem with an alias: named at the line that uses it, not its anchor's."""
        return YAMLSourceError(self.located.source, self.located.line_of(path), message, path)

    def walk(self, node: yaml.Node, path: Path, depth: int) -> object:
        """The value of ``node``; sizes of walked collections are kept in ``done``."""
        if isinstance(node, yaml.ScalarNode):
            self.nodes += 1
            value = self.scalar(node, path)
            node.start_mark = node.end_mark = None      # see _drop_marks
            return value
        key = id(node)
        seen = self.done.get(key)
        if seen is not None:
            return self.reuse(node, path, seen)
        if key in self.active:
            raise self.fail_at(path, "an alias refers to a collection that contains it "
                            "(an alias loop)")
        if node.tag not in _COLLECTION_TAGS:
            raise self.fail(node, path, f"unsupported tag {node.tag!r} (plain lists and "
                            "mappings only)")
        if depth >= self.limits.max_depth:
            raise self.fail(node, path, f"nested deeper than {self.limits.max_depth} levels")
        if len(node.value) > self.limits.max_items:
            raise self.fail(node, path, f"{len(node.value)} entries in one collection, more "
                            f"than the limit of {self.limits.max_items}")
        self.active.add(key)
        before = self.nodes + self.aliased
        self.nodes += 1
        if self.nodes > self.limits.max_nodes:
            raise self.fail(node, path, f"more than {self.limits.max_nodes} nodes in the "
                            "document")
        if isinstance(node, yaml.MappingNode):
            value: object = self.mapping(node, path, depth)
        else:
            lines = self.lines
            value = []
            done, active = self.done, self.active
            for i, item in enumerate(node.value):
                # an alias's node carries its anchor's line (or none, once walked): the
                # list's line is nearer
                mark = item.start_mark
                if mark is not None and (type(item) is yaml.ScalarNode or (
                        id(item) not in done and id(item) not in active)):
                    lines[(*path, i)] = mark.line + 1
                value.append(self.walk(item, (*path, i), depth + 1))
        node.start_mark = node.end_mark = None
        self.active.discard(key)
        self.done[key] = (value, self.nodes + self.aliased - before)
        return value

    def reuse(self, node: yaml.Node, path: Path, seen: tuple[object, int]) -> object:
        """An aliased collection: its value again, its size charged to the alias budget."""
        value, size = seen
        self.aliased += size
        budget = max(self.limits.alias_floor, self.nodes)
        if self.aliased > budget:
            raise self.fail_at(path, f"aliases expand to more than {budget} nodes (the "
                            f"limit is {self.limits.alias_floor} or the number of nodes "
                            "written out, whichever is larger)")
        return value

    def mapping(self, node: yaml.MappingNode, path: Path, depth: int) -> dict:
        result: dict = {}
        merges = []
        lines, max_string = self.lines, self.limits.max_string
        walk, scalar_node = self.walk, yaml.ScalarNode
        for key_node, value_node in node.value:
            if type(key_node) is scalar_node and key_node.tag == _STR_TAG \
                    and len(key_node.value) <= max_string:
                key = key_node.value          # the common case, without the detours below
            elif key_node.tag == _MERGE_TAG:
                merges.append(value_node)
                continue
            else:
                key = self.scalar(key_node, path) if isinstance(key_node, scalar_node) \
                    else key_node
                if not isinstance(key, str | int | bool | float) and key is not None:
                    raise self.fail(key_node, path, "mapping keys must be scalars")
                key = str(key)
            if key in result:
                raise self.fail(key_node, path, f"duplicate key {key!r}")
            mark = key_node.start_mark
            if mark is not None:
                lines[(*path, key)] = mark.line + 1
                key_node.start_mark = key_node.end_mark = None
            if type(value_node) is scalar_node and value_node.tag == _STR_TAG \
                    and len(value_node.value) <= max_string:
                self.nodes += 1
                result[key] = value_node.value
                value_node.start_mark = value_node.end_mark = None
            else:
                result[key] = walk(value_node, (*path, key), depth + 1)
        self.nodes += len(node.value)
        for merge in merges:       # after the explicit keys, which win
            sources = merge.value if isinstance(merge, yaml.SequenceNode) else [merge]
            for source in sources:
                if not isinstance(source, yaml.MappingNode):
                    raise self.fail(source, path, "a merge key ('<<') needs a mapping or a "
                                    "list of mappings")
                for key, value in walk(source, path, depth + 1).items():
                    result.setdefault(key, value)
        return result

    def scalar(self, node: yaml.Node, path: Path) -> object:
        if len(node.value) > self.limits.max_string:
            raise self.fail(node, path, f"a value of {len(node.value)} characters, more "
                            f"than the limit of {self.limits.max_string}")
        if node.tag == _STR_TAG:
            return node.value  # what SafeConstructor.construct_yaml_str returns
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as exc:
            raise self.fail(node, path, str(exc.problem)) from None
        except (ValueError, TypeError, OverflowError, IndexError) as exc:
            # IndexError: an empty '!!int' or '!!float' (the constructor reads value[0])
            reason = "it is empty" if not node.value else exc
            raise self.fail(node, path, f"cannot read {node.tag.rsplit(':', 1)[-1]} "
                            f"value: {reason}") from None
