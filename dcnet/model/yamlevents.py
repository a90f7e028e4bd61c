"""Plain data built straight from libyaml's event stream, for the YAML documents it can take.

:func:`dcnet.model.yamlsource.load_located` used to compose PyYAML's node tree of the whole
document and walk it: at 10,000 services x 10 real servers the tree alone is about 200
MiB (docs/metrics.md). :func:`build` turns the parser's events into the same lists,
dicts and scalars one event at a time, with the same bounds (depth, entries, string
length, nodes), and records the line of each field path only when asked (``lines``): a
valid model needs none, and a model with problems is parsed again for them.

It takes only what it can build exactly as the walk over the node tree would: no
anchors or aliases (so no merge keys), no tags on lists and mappings but ``!``, string
keys only, scalars of the safe constructor's plain kinds (string, null, boolean,
integer, float, timestamp) and readable as such, one document, and no problem of any
kind. Anything else raises :class:`Unsupported` and the caller composes
the document as before, which also words every error, so messages cannot differ.
"""

from __future__ import annotations

from collections.abc import Callable

import yaml

_FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STR_TAG = "tag:yaml.org,2002:str"
# implicitly resolved scalar tags read by the safe constructor (merge and value keys are not)
_SCALAR_TAGS = frozenset(f"tag:yaml.org,2002:{name}" for name in (
    "null", "bool", "int", "float", "timestamp"))
_PLAIN_TAGS = (None, "!")       # tags libyaml leaves to the resolver (as its composer does)


class Unsupported(Exception):
    """The document uses something :func:`build` leaves to the composed path (a YAML
    feature, a broken limit or invalid text); the message says what, for tests."""


def build(text: str, limits, lines: dict | None = None,
          services: Callable[[int, dict], object] | None = None) -> object:
    """The plain value of the single YAML document in ``text`` (None for no document),
    within ``limits`` (a :class:`dcnet.model.yamlsource.Limits`); with ``lines``, each
    field path's 1-based line is recorded there as the node-tree walk records it.
    ``services(i, item)``, if given, replaces each mapping ``item`` of the top mapping's
    ``services`` list, at index ``i``, by what it returns as soon as the item is built:
    the model loader reads each service there, so the raw services are never all held."""
    # libyaml keeps a UTF-8 copy of a whole str for the parse (3.7 MiB at 10,000 x 10);
    # read in pieces it copies a piece at a time (ASCII only: the same bytes, piece by piece)
    loader = _FAST_LOADER(_Pieces(text) if text.isascii() else text)
    try:
        return _Builder(loader, limits, lines, services).run()
    except Unsupported:
        raise
    except Exception as exc:   # parse errors and the constructor's: worded by the composer
        raise Unsupported(f"{type(exc).__name__}: {exc}") from None
    finally:
        loader.dispose()


class _Pieces:
    """``text`` as a stream that the parser reads ``size`` characters at a time."""

    def __init__(self, text: str):
        self.text, self.at = text, 0

    def read(self, size: int = -1) -> str:
        start = self.at
        self.at = len(self.text) if size < 0 else start + size
        return self.text[start:self.at]


class _Builder:
    """One pass over the events. ``stack`` holds the open collections as ``[container,
    path, key]``: the path only when recording lines, the key of a mapping's entry
    between its key and its value (else None)."""

    def __init__(self, loader, limits, lines: dict | None, services=None):
        self.loader, self.limits, self.lines = loader, limits, lines
        self.services = services
        self.constructor = yaml.SafeLoader("")
        self.scalars: dict[tuple[str, str], object] = {}   # (tag, text) -> value
        self.keys: dict[str, str] = {}                     # one string per distinct key

    def run(self) -> object:
        get_event = self.loader.get_event
        if type(get_event()) is not yaml.StreamStartEvent:
            raise Unsupported("no stream start")
        event = get_event()
        if type(event) is yaml.StreamEndEvent:
            return None
        if type(event) is not yaml.DocumentStartEvent:
            raise Unsupported("no document start")
        value = self.document(get_event)
        if type(get_event()) is not yaml.DocumentEndEvent:
            raise Unsupported("no document end")
        if type(get_event()) is not yaml.StreamEndEvent:
            raise Unsupported("more than one document")
        return value

    def document(self, get_event) -> object:     # one loop, for speed
        limits, lines = self.limits, self.lines
        max_depth, max_items, max_nodes = limits.max_depth, limits.max_items, limits.max_nodes
        max_string, keys, resolve = limits.max_string, self.keys, self.loader.resolve
        ScalarEvent, MappingStartEvent = yaml.ScalarEvent, yaml.MappingStartEvent
        SequenceStartEvent, ScalarNode = yaml.SequenceStartEvent, yaml.ScalarNode
        SequenceEndEvent, MappingEndEvent = yaml.SequenceEndEvent, yaml.MappingEndEvent
        stack: list[list] = []
        root: list = []
        hook, hooked = self.services, None     # hooked: the top mapping's services list
        nodes = 0                   # counted as the walk counts them (keys at mapping end)
        while True:
            event = get_event()
            kind = type(event)
            if kind is ScalarEvent:
                if event.anchor is not None:
                    raise Unsupported("anchor")
                value, tag = event.value, event.tag
                if len(value) > max_string:
                    raise Unsupported("long scalar")
                if tag in _PLAIN_TAGS:
                    tag = resolve(ScalarNode, value, event.implicit)
                if stack:
                    frame = stack[-1]
                    container = frame[0]
                    if type(container) is dict and frame[2] is None:   # a key
                        if tag != _STR_TAG:
                            raise Unsupported("key that is not a string")
                        key = keys.setdefault(value, value)
                        if key in container:
                            raise Unsupported("duplicate key")
                        frame[2] = key
                        if lines is not None:
                            lines[(*frame[1], key)] = event.start_mark.line + 1
                        continue
                nodes += 1
                item = value if tag == _STR_TAG else self.scalar(tag, value)
                if not stack:
                    if lines is not None:
                        lines[()] = event.start_mark.line + 1
                    return item
                if type(container) is dict:
                    container[frame[2]] = item
                    frame[2] = None
                else:
                    if lines is not None:
                        lines[(*frame[1], len(container))] = event.start_mark.line + 1
                    container.append(item)
            elif kind is MappingStartEvent or kind is SequenceStartEvent:
                if event.anchor is not None:
                    raise Unsupported("anchor")
                if event.tag not in _PLAIN_TAGS:
                    raise Unsupported(f"tag {event.tag!r}")
                if len(stack) >= max_depth:
                    raise Unsupported("too deep")
                nodes += 1
                if nodes > max_nodes:
                    raise Unsupported("too many nodes")
                new: dict | list = {} if kind is MappingStartEvent else []
                path = None
                if not stack:
                    root.append(new)
                    if lines is not None:
                        path = ()
                        lines[()] = event.start_mark.line + 1
                else:
                    frame = stack[-1]
                    container = frame[0]
                    if type(container) is dict:
                        if frame[2] is None:
                            raise Unsupported("key that is not a string")
                        if lines is not None:
                            path = (*frame[1], frame[2])
                        if (hook is not None and len(stack) == 1 and frame[2] == "services"
                                and type(new) is list):
                            hooked = new
                        container[frame[2]] = new
                        frame[2] = None
                    else:
                        if lines is not None:
                            path = (*frame[1], len(container))
                            lines[path] = event.start_mark.line + 1
                        container.append(new)
                stack.append([new, path, None])
            elif kind is MappingEndEvent or kind is SequenceEndEvent:
                container = stack.pop()[0]
                if len(container) > max_items:
                    raise Unsupported("too many entries")
                if kind is MappingEndEvent:
                    nodes += len(container)
                    if hooked is not None and len(stack) == 2 and stack[1][0] is hooked:
                        hooked[-1] = hook(len(hooked) - 1, container)
                if not stack:
                    return root[0]
            else:               # an alias (or an event out of place)
                raise Unsupported(type(event).__name__)

    def scalar(self, tag: str, value: str) -> object:
        """What the safe constructor makes of a plain scalar (cached: values repeat)."""
        if tag not in _SCALAR_TAGS:
            raise Unsupported(f"tag {tag!r}")
        cache_key = (tag, value)
        try:
            return self.scalars[cache_key]
        except KeyError:
            pass
        constructor = self.constructor
        result = constructor.yaml_constructors[tag](constructor, yaml.ScalarNode(tag, value))
        self.scalars[cache_key] = result
        return result
