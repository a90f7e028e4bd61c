"""SOA serials that move only when a zone's content changes (pure).

Serials are date-based, ``YYYYMMDDnn``. The state is the installed zone files
themselves: each carries its serial in the SOA and its content digest in a header
comment (see :mod:`dcnet.dns.installed`). A zone whose digest is unchanged keeps its
serial; a changed or new zone gets ``max(today's YYYYMMDD00, highest serial installed for
that zone name in any view + 1)``, so serials only grow, also when a view stops sharing
another view's zone and gets its own file.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

MAX_SERIAL = 2**32 - 1


@dataclass(frozen=True)
class Installed:
    """What an installed zone file says about itself."""

    serial: int
    digest: str | None


def date_base(today: dt.date) -> int:
    return int(today.strftime("%Y%m%d")) * 100


def next_serial(key: tuple[str, str], digest: str,
                installed: Mapping[tuple[str, str], Installed], today: dt.date) -> int:
    """The serial for zone ``key`` = (view, zone) whose content hashes to ``digest``."""
    have = installed.get(key)
    if have is not None and have.digest == digest:
        return have.serial
    zone = key[1]
    highest = max((i.serial for (_, z), i in installed.items() if z == zone), default=0)
    serial = max(date_base(today), highest + 1)
    if serial > MAX_SERIAL:
        raise ValueError(f"SOA serial of {zone} would pass {MAX_SERIAL}")
    return serial
