"""Prometheus discovery derived from the model: a file-SD document, and the shipped rules.

:func:`groups` makes one target group per metrics endpoint: each director (``elbctl
exporter`` / ``elbctl agent --metrics-address``) and each ``dcnet-agent``. A director
serves every service of the model, so its group is labelled by what the model says of
it (role, the carriers it serves, the model's source and service count); the per-service
labels (``service``: the JOBNAME, ``port``, ``carrier``) are on the series themselves,
and ``dcnet_service_info`` carries each JOBNAME's tags (``tag_cluster``, ``tag_pdl``,
...) for ``group_left`` joins. Splitting a director into one scrape per service would
multiply the scrapes by the number of services (10k) for the same series.

``RULES_PATH`` is ``rules/dcnet.rules.yml`` (package data): recording rules per service
and alerts: sync failing, drift, DHCP lease renewals failing, a VIP with no healthy
server, an exporter source down.
"""

from __future__ import annotations

import json
import os

RULES_PATH = os.path.join(os.path.dirname(__file__), "rules", "dcnet.rules.yml")


def groups(model, directors: list[str], agents: list[str]) -> list[dict]:
    """The file-SD target groups of ``model``'s directors and agents (pure)."""
    carriers = ",".join(c.name for c in model.carriers)
    common = {"dcnet_model": str(model.source), "dcnet_services": str(len(model.services))}
    out = []
    for endpoint in directors:
        out.append({"targets": [endpoint],
                    "labels": {"dcnet_role": "director", "carrier": carriers, **common}})
    for endpoint in agents:
        out.append({"targets": [endpoint], "labels": {"dcnet_role": "agent"}})
    return out


def render(target_groups: list[dict]) -> str:
    return json.dumps(target_groups, indent=2, sort_keys=True) + "\n"
