"""YAML documents turned into plain data plus the source line of every field.

PyYAML's node tree knows where each value starts; this module walks it once and returns
the Python value together with a map from field path (a tuple of keys and indexes) to
its 1-based line, so validation can name the exact line of a bad field.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml

Path = tuple[str | int, ...]
# libyaml's parser when PyYAML was built with it (Debian's and PyPI's wheels are): the
# pure-Python scanner dominates loading a large model otherwise.
_FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YAMLSourceError(ValueError):
    """The text is not valid YAML (or holds a duplicate key); names source and line."""

    def __init__(self, source: str, line: int | None, message: str):
        self.source, self.line = source, line
        where = source if line is None else f"{source}:{line}"
        super().__init__(f"{where}: {message}")


@dataclass
class LocatedData:
    """A parsed document and the line of each field path inside it."""

    data: object
    source: str
    lines: dict[Path, int] = field(default_factory=dict)

    def line_of(self, path: Path) -> int | None:
        """The line of ``path``, or of its nearest ancestor that has one."""
        while True:
            if path in self.lines:
                return self.lines[path]
            if not path:
                return None
            path = path[:-1]


def load_located(text: str, source: str) -> LocatedData:
    """Parse one YAML document (safe tags only) and record field lines."""
    try:
        node = yaml.compose(text, Loader=_FAST_LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise YAMLSourceError(source, line, f"invalid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise YAMLSourceError(source, None, f"invalid YAML: {exc}") from None
    located = LocatedData(data=None, source=source)
    if node is None:
        return located
    constructor = yaml.SafeLoader("")
    located.data = _walk(node, (), located, constructor)
    return located


def _walk(node: yaml.Node, path: Path, located: LocatedData, constructor) -> object:
    located.lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        constructor.flatten_mapping(node)
        result: dict = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node, located, constructor)
            if not isinstance(key, str | int | bool | float) and key is not None:
                raise YAMLSourceError(located.source, key_node.start_mark.line + 1,
                                      "mapping keys must be scalars")
            key = str(key)
            if key in result:
                raise YAMLSourceError(located.source, key_node.start_mark.line + 1,
                                      f"duplicate key {key!r}")
            result[key] = _walk(value_node, (*path, key), located, constructor)
            located.lines[(*path, key)] = key_node.start_mark.line + 1
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_walk(item, (*path, i), located, constructor) for i, item in enumerate(node.value)]
    return _scalar(node, located, constructor)


_STR_TAG = "tag:yaml.org,2002:str"


def _scalar(node: yaml.Node, located: LocatedData, constructor) -> object:
    if node.tag == _STR_TAG and isinstance(node, yaml.ScalarNode):
        return node.value  # what SafeConstructor.construct_yaml_str returns, without the detour
    try:
        return constructor.construct_object(node, deep=True)
    except yaml.constructor.ConstructorError as exc:
        raise YAMLSourceError(located.source, node.start_mark.line + 1, str(exc.problem)) from None
