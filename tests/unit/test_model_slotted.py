"""The model's classes with ``__slots__``: no ``__dict__`` per object, a model pickles
and unpickles equal (through ``__init__``), and a model pickled before the slots (each
object's fields as a dict: ``<target>.model.pickle`` of an earlier apply) still loads
with the right values, not the field names."""

from __future__ import annotations

import base64
import copy
import dataclasses
import ipaddress
import pickle

import pytest

from dcnet.model import JobName, Port, RealServer, Service, parse_model
from tests.unit.model_fixtures import JOB_A, model_text, read_file

pytestmark = pytest.mark.unit


def model():
    return parse_model(model_text(), source="m.yaml", read_text=read_file())


# pickle.dumps([RealServer(10.0.0.1, 10, 8080), JobName.parse(JOB_A) after str(),
# Port(443, scheduler="rr", target_port=8443)]) by the classes with a __dict__ (2245638):
# each object a __newobj__ and its fields as a dict, JobName's cached text among them
BEFORE = base64.b64decode(
    "gASV+QEAAAAAAABdlCiMEWRjbmV0Lm1vZGVsLnR5cGVzlIwKUmVhbFNlcnZlcpSTlCmBlH2UKIwHYWRkcmVz"
    "c5SMCWlwYWRkcmVzc5SMC0lQdjRBZGRyZXNzlJOUSgEAAAqFlFKUjAZ3ZWlnaHSUSwqMBHBvcnSUTZAfdWKM"
    "E2RjbmV0Lm1vZGVsLmpvYm5hbWWUjAdKb2JOYW1llJOUKYGUfZQojANqb2KUjAN3ZWKUjAdzZXJ2aWNllIwE"
    "c2hvcJSMB2NsdXN0ZXKUjARwcm9klIwDcGRslIwGcmV0YWlslIwDb3d0lIwDc3JllIwDY29wlIwHZXhhbXBs"
    "ZZSMCGpvYmdyb3VwlE6MDHNlcnZpY2Vncm91cJROjAVfdGV4dJSMQGpvYi53ZWJfc2VydmljZS5zaG9wX2Ns"
    "dXN0ZXIucHJvZF9wZGwucmV0YWlsX293dC5zcmVfY29wLmV4YW1wbGWUdWJoAYwEUG9ydJSTlCmBlH2UKGgN"
    "TbsBjAhwcm90b2NvbJRoAYwIUHJvdG9jb2yUk5SMA3RjcJSFlFKUjAlzY2hlZHVsZXKUjAJycpSMB2Zvcndh"
    "cmSUaAGMCkZvcndhcmRpbmeUk5SMAmRylIWUUpSMC3BlcnNpc3RlbmNllEsAjAt0YXJnZXRfcG9ydJRN+yCM"
    "BG1vZGWUaCp1YmUu")


def test_the_model_objects_have_no_dict_and_pickle_equal():
    loaded = model()
    service = loaded.services[0]
    for thing in (loaded, service, service.job, service.ports[0], service.real_servers[0],
                  service.health_check, loaded.carriers[0], service.endpoints()[0]):
        assert not hasattr(thing, "__dict__"), type(thing).__name__
    str(service.job)                                 # its text cached: not pickled
    again = pickle.loads(pickle.dumps(loaded, pickle.HIGHEST_PROTOCOL))
    assert again == loaded and hash(again.services) == hash(loaded.services)
    assert again.services[0].name == JOB_A and copy.deepcopy(loaded) == loaded
    assert isinstance(again.services[0].real_servers[0].address, ipaddress.IPv4Address)


def test_a_pickle_made_before_the_slots_loads_with_its_values():
    server, job, port = pickle.loads(BEFORE)
    assert server == RealServer(ipaddress.ip_address("10.0.0.1"), 10, 8080)
    assert server.weight == 10 and server.port == 8080
    assert job == JobName.parse(JOB_A) and str(job) == JOB_A and job.cluster == "prod"
    assert port == Port(443, scheduler="rr", target_port=8443) and port.mode == "tcp"


def test_the_dataclass_state_form_is_read_too():
    port = Port(443, scheduler="rr", target_port=8443)
    fresh = Port.__new__(Port)
    fresh.__setstate__([getattr(port, f.name) for f in dataclasses.fields(Port)])
    assert fresh == port
    service = model().services[1]
    assert pickle.loads(pickle.dumps(service, 0)) == service    # the oldest protocol
    assert isinstance(pickle.loads(pickle.dumps(service)), Service)
