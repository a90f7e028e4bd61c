"""Pausing Python's cyclic garbage collector around bulk builds of acyclic data.

Loading a 10,000-service model or syncing a 10,000 x 10 IPVS table builds hundreds of
thousands of tuples and dicts; every few hundred allocations the collector walks the
young ones and, as they pile up, the whole heap again and again, which costs as much as
the work itself (bench/model_load.py, bench/lvs_apply.py). Nothing built there forms a
cycle, so pausing the collector for the block loses nothing.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Hold the collector for the block; re-enable it afterwards if it was on."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
