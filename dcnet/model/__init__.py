"""The one declarative service model shared by every back end.

A YAML file declares carriers (name, uplink, gateway, routing table, VIP ranges, client
CIDR list, default line) and ELB services (JOBNAME, a VIP per carrier, ports, real
servers, health check). :func:`load_model` validates everything and returns immutable
objects, or raises :class:`ModelError` listing every problem with file, line and field.
"""

from dcnet.model.errors import ModelError, Problem
from dcnet.model.jobname import JobName
from dcnet.model.loader import load_model, parse_model
from dcnet.model.types import (
    SCHEDULERS,
    Carrier,
    CheckType,
    Endpoint,
    Forwarding,
    HealthCheck,
    Model,
    Port,
    Protocol,
    RealServer,
    Service,
)

__all__ = [
    "SCHEDULERS", "Carrier", "CheckType", "Endpoint", "Forwarding", "HealthCheck", "JobName",
    "Model", "ModelError", "Port", "Problem", "Protocol", "RealServer", "Service", "load_model",
    "parse_model",
]
