"""Settings sections of the model: ``agent``, ``dns``, ``haproxy``, ``lvs`` and ``mirror``.

Each optional top-level section is read by its own module (``agent_section``,
``dns_section``, ``haproxy_section``, ``lvs_section``), which owns a frozen settings class
with defaults, a ``read(problems, path, data)`` that returns settings or None after
reporting problems, and a ``check(settings, carriers, services, problems)`` for rules
that need the rest of the model. A missing section means the defaults (``mirror``: None).
"""

from __future__ import annotations

from types import ModuleType

from dcnet.model import agent_section, dns_section, haproxy_section, lvs_section, mirror_section

SECTIONS: dict[str, ModuleType] = {
    "agent": agent_section,
    "dns": dns_section,
    "haproxy": haproxy_section,
    "lvs": lvs_section,
    "mirror": mirror_section,       # None when absent (nothing mirrored)
}
