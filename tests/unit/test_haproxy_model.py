"""The model's HAProxy fields of issue 14: ``mode: http`` per port (rendered, validated by
``haproxy -c``, refused on UDP/SCTP) and ``haproxy.drain_deadline`` (at most
``hard_stop_after``), each refused with file, line and field."""

from __future__ import annotations

import pytest
import yaml

from dcnet.haproxy.check import render_valid
from dcnet.haproxy.paths import Paths
from dcnet.haproxy.render import render
from dcnet.lab import haproxy_lab as hlab
from dcnet.model import ModelError, parse_model

RS1 = hlab.server_address(1)


def data(mode: str | None = None, **haproxy) -> dict:
    out = hlab.model_data({RS1: 10}, services=2, **haproxy)
    if mode:
        out["services"][0]["ports"][0]["mode"] = mode
    return out


def problems(model: dict) -> list:
    with pytest.raises(ModelError) as caught:
        parse_model(yaml.safe_dump(model), source="m.yaml")
    found = caught.value.problems
    assert all(isinstance(p.line, int) and p.line > 0 for p in found)   # file:line
    return [(p.source, p.path, p.message) for p in found]


def frontend_and_backend(text: str, name: str) -> tuple[str, str]:
    front = text.split(f"frontend {name}\n", 1)[1].split("\n\n", 1)[0]
    back = text.split(f"backend {name}\n", 1)[1].split("\n\n", 1)[0]
    return front, back


def test_http_mode_renders_l7_options_and_passes_haproxy_check(tmp_path):
    model = hlab.model_of(data("http"))
    checked = render_valid(model, Paths(str(tmp_path)))
    assert checked.bad == {}
    http = f"{hlab.JOB}:{hlab.SERVICE_PORT}"
    front, back = frontend_and_backend(checked.rendered.text, http)
    for line in ("mode http", "option forwardfor", "option idle-close-on-response",
                 "timeout http-request 10000ms", "timeout http-keep-alive 5000ms"):
        assert f"    {line}\n" in front + "\n", line
    assert "    mode http\n" in back
    tcp = f"{hlab.job_name(1)}:{hlab.SERVICE_PORT + 1}"
    front, back = frontend_and_backend(checked.rendered.text, tcp)
    assert "mode http" not in front + back and "forwardfor" not in front


def test_switching_a_port_to_http_is_a_config_change():
    paths = Paths("/run/x")
    before = render(hlab.model_of(data()), paths)
    after = render(hlab.model_of(data("http")), paths)
    assert before.text != after.text


def test_http_mode_is_refused_on_udp_and_unknown_modes_are_refused():
    model = data("http")
    model["services"][0]["ports"][0]["protocol"] = "udp"
    [(source, path, message)] = problems(model)
    assert (source, path) == ("m.yaml", "services[0].ports[0].mode")
    assert "needs protocol tcp" in message
    [(_, path, message)] = problems(data("h2"))
    assert path == "services[0].ports[0].mode" and "unknown mode 'h2'" in message


def test_drain_deadline_defaults_within_hard_stop_after_and_is_checked():
    model = hlab.model_of(data())
    assert model.haproxy.drain_deadline <= model.haproxy.hard_stop_after
    [(_, path, message)] = problems(data(drain_deadline=31, hard_stop_after=30))
    assert path == "haproxy.drain_deadline" and "longer than haproxy.hard_stop_after" in message
    [(_, path, message)] = problems(data(drain_deadline=-1))
    assert path == "haproxy.drain_deadline"
