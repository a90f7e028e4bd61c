"""A stateful fake of named behind rndc (:class:`dcnet.dns.bind.Rndc`), for unit tests.

:class:`FakeRndc` is the unit tests' stand-in for a named serving one BIND directory: it
answers ``status``, ``reconfig`` and ``reload(zone, view)`` (the calls
:class:`dcnet.dns.backend.DNSTarget` makes) by "loading" the directory's files the way
named does, and :meth:`FakeRndc.serial` reports the SOA serial it serves per zone and
view. tests/netns/test_dns_rndc_contract.py runs the same contract against it and a real
named in a network namespace, which keeps it honest. What it models:

- starting (:meth:`start`, also done by the constructor) loads named.conf and every zone;
- ``reconfig`` re-reads named.conf: new zones (or zones now using another file) are
  loaded, zones removed are dropped, but a zone already loaded from the same file keeps
  what it served, even if the file changed (named only reloads zone files on ``reload``);
- ``reload ZONE IN VIEW`` re-reads that zone's file as the loaded configuration names it
  (an unknown zone or view: :class:`~dcnet.dns.bind.BindError`);
- a zone declared ``in-view`` serves the zone of the view it names;
- ``down = True`` (or :meth:`stop`) makes every call raise :class:`~dcnet.dns.bind.NamedDown`;
  a call listed in ``refuse`` (e.g. ``"reload ZONE IN VIEW"``) raises
  :class:`~dcnet.dns.bind.BindError` and changes nothing (a fault for unit tests only).
"""

from __future__ import annotations

import os

from dcnet.dns.bind import BindError, NamedDown
from dcnet.dns.installed import parse_named_conf, parse_zone_file
from dcnet.dns.render import NAMED_CONF

Key = tuple[str, str]       # (view, zone), as dcnet.dns.installed keys zones


class FakeRndc:
    """named serving ``directory`` (its named.conf and zone files), reached by rndc."""

    def __init__(self, directory: str):
        self.directory = directory
        self.down = False
        self.declared: dict[Key, dict] = {}          # the loaded configuration's zones
        self.loaded: dict[Key, int | None] = {}      # own-file zones: serial served
        self.calls: list[str] = []                   # every call that reached named
        self.refuse: set[str] = set()                # calls ("reload Z IN V") to fail
        self.start()

    # -- named's life

    def start(self) -> None:
        """Start named: load named.conf and every zone it declares."""
        self.down = False
        self.declared, self.loaded = {}, {}
        self._configure()

    def stop(self) -> None:
        self.down = True

    # -- the rndc calls DNSTarget makes

    def status(self) -> str:
        self._answer("status")
        zones = sum(1 for d in self.declared.values() if d["file"])
        return f"number of zones: {zones}\nserver is up and running\n"

    def reconfig(self) -> None:
        self._answer("reconfig")
        self._configure()

    def reload(self, zone: str, view: str) -> None:
        self._answer(f"reload {zone} IN {view}")
        decl = self.declared.get((view, zone))
        if decl is None:
            raise BindError(f"rndc reload {zone} IN {view} failed: rndc: 'reload' failed: "
                            "not found")
        if decl["file"]:
            self.loaded[(view, zone)] = self._zone_serial(decl["file"])

    # -- what named serves (the contract test reads the real one with rndc zonestatus)

    def serial(self, zone: str, view: str) -> int | None:
        """The SOA serial named serves for ``zone`` in ``view`` (None: not served)."""
        decl = self.declared.get((view, zone))
        if decl is None:
            return None
        if decl["in_view"]:
            return self.serial(zone, decl["in_view"])
        return self.loaded.get((view, zone))

    def serials(self) -> dict[Key, int | None]:
        return {key: self.serial(key[1], key[0]) for key in self.declared}

    # -- internals

    def _answer(self, call: str) -> None:
        if self.down:
            raise NamedDown(f"named is not answering rndc (fake, down) for {call!r}; "
                            "is named running with this control channel?")
        self.calls.append(call)
        if call in self.refuse:
            raise BindError(f"rndc {call} failed: refused (fake)")

    def _read(self, name: str) -> str | None:
        try:
            with open(os.path.join(self.directory, name), encoding="utf-8") as fh:
                return fh.read()
        except FileNotFoundError:
            return None

    def _zone_serial(self, name: str) -> int | None:
        text = self._read(name)
        found = parse_zone_file(text) if text is not None else None
        return found.serial if found else None

    def _configure(self) -> None:
        text = self._read(NAMED_CONF)
        if text is None:
            raise BindError(f"rndc reconfig failed: {NAMED_CONF}: file not found")
        config = parse_named_conf(text, os.path.join(self.directory, NAMED_CONF))
        loaded: dict[Key, int | None] = {}
        for key, decl in config.zones.items():
            if not decl["file"]:
                continue
            before = self.declared.get(key)
            if before is not None and before["file"] == decl["file"] and key in self.loaded:
                loaded[key] = self.loaded[key]          # reused: not reloaded
            else:
                loaded[key] = self._zone_serial(decl["file"])
        self.declared = {key: dict(decl) for key, decl in config.zones.items()}
        self.loaded = loaded
