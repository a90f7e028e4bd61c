"""The effective model: the pushed model with the registered backends merged in (pure).

The merge is the file registry's (:func:`dcnet.lvs.layout.effective_servers`, the one
``elbctl apply --target lvs`` uses for ``registry.json``): ``active`` adds or re-weights a
server, ``draining`` keeps it at weight 0, ``removed`` takes it out (even a model server);
model servers first, in model order, then registered additions sorted by ADDR[:PORT].
Only the real servers change, so every back end applies the result with its own plan.
Entries for services the model does not declare are ignored, as with the file registry.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import replace

from dcnet.lvs.layout import effective_servers, layouts
from dcnet.model import Model, RealServer

Registry = Mapping[str, Mapping[str, dict]]     # JOBNAME -> ADDR[:PORT] -> entry


def effective_model(model: Model, registry: Registry) -> Model:
    if not any(registry.get(s.name) for s in model.services):
        return model
    services = []
    for service, layout in zip(model.services, layouts(model), strict=True):
        entries = registry.get(service.name)
        if not entries:
            services.append(service)
            continue
        merged = effective_servers(layout, dict(entries))
        servers = tuple(RealServer(ipaddress.ip_address(s.address), s.weight, s.port)
                        for s in merged)
        services.append(replace(service, real_servers=servers))
    return replace(model, services=tuple(services))
