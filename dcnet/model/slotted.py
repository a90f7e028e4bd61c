"""Pickling of the model's slotted classes: by their ``__init__`` fields, and from the
pickles made before they had slots.

The model's many small objects (100,000 real servers at 10,000 x 10) are frozen
dataclasses with ``__slots__`` (docs/model.md, "Memory"): no ``__dict__`` each. A frozen
slotted dataclass pickles its fields as a list that a Python ``__setstate__`` sets one by
one; :func:`pickled_by_fields` makes the class pickle as a call of itself with its
``__init__`` fields instead (the model pickles and unpickles about as fast as with
``__dict__``), and reads a state that is a dict of fields too: the form a model pickled
before the slots has (``<dir>/<target>.model.pickle``, :mod:`dcnet.backendfile`), which
the dataclass's own ``__setstate__`` would read as a list of the field names.
"""

from __future__ import annotations

import dataclasses
import operator
from typing import TypeVar

T = TypeVar("T", bound=type)


def pickled_by_fields(cls: T) -> T:
    """Give the frozen, slotted dataclass ``cls`` a ``__reduce__`` that calls ``cls`` with
    its ``__init__`` fields (fields out of ``__init__`` are left to their defaults), and
    a ``__setstate__`` reading a list of every field's value or a dict of fields."""
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    every = tuple(f.name for f in dataclasses.fields(cls))
    setter = object.__setattr__                # the class's own refuses: it is frozen
    if len(names) > 1:
        values = operator.attrgetter(*names)   # a tuple of their values (in C)
    else:
        def values(self) -> tuple:
            return tuple(getattr(self, name) for name in names)

    def __reduce__(self):
        return type(self), values(self)

    def __setstate__(self, state) -> None:
        items = state.items() if isinstance(state, dict) else zip(every, state, strict=True)
        for name, value in items:
            setter(self, name, value)

    cls.__reduce__ = __reduce__
    cls.__setstate__ = __setstate__
    return cls
