"""The exporter's model loaded in a child process: the labelling index it keeps is the
one the model gives in-process, an invalid model is refused with the same problems (in
the same order), a model handed to the next child in pieces is the same model, and
glibc's heap trim is callable."""

from __future__ import annotations

import dataclasses
import os
import pickle
import sys

import pytest

from dcnet.cli.elbctl_metrics import IsolatedWatch
from dcnet.metrics import isolated
from dcnet.metrics.elb import ServiceIndex
from dcnet.model import ModelError, load_model
from dcnet.model import pieces as model_pieces
from dcnet.model.errors import Problem
from tests.unit.model_fixtures import FILES, model_text

pytestmark = pytest.mark.unit


def write_model(tmp_path, text: str) -> str:
    for name, content in FILES.items():
        (tmp_path / name).write_text(content)
    path = tmp_path / "model.yaml"
    path.write_text(text)
    return str(path)


def test_the_index_loaded_in_a_child_is_the_in_process_one(tmp_path):
    path = write_model(tmp_path, model_text())
    watch = IsolatedWatch({}, path, interval=0)     # no haproxy target: no service_carriers
    expected = ServiceIndex.of(load_model(path), services=False)
    assert isinstance(watch.current, ServiceIndex)
    assert watch.current == expected
    assert watch.current.info_text() == expected.info_text()
    assert 'tag_job="web",' in watch.current.info_text()
    assert watch.current.server_slots == 3
    assert watch.drifts == {}


def test_an_invalid_model_is_refused_with_its_problems_in_order(tmp_path):
    def break_it(data):
        data["services"][0]["ports"][0]["port"] = 0
        data["services"][1]["real_servers"][0]["address"] = "not-an-address"

    path = write_model(tmp_path, model_text(break_it))
    with pytest.raises(ModelError) as in_process:
        load_model(path)
    with pytest.raises(ModelError) as from_child:
        IsolatedWatch({}, path, interval=0)
    assert len(in_process.value.problems) == 2
    assert from_child.value.problems == in_process.value.problems
    assert str(from_child.value) == str(in_process.value)


def test_a_model_error_pickles_with_its_trailing_problem_last():
    error = ModelError([Problem("m.yaml", 9, "b", "late"), Problem("m.yaml", 2, "a", "x")],
                       last=Problem("m.yaml", None, "", "3 more problems not listed"))
    copy = pickle.loads(pickle.dumps(error))
    assert copy.problems == error.problems
    assert copy.problems[-1].message == "3 more problems not listed"
    assert str(copy) == str(error)


def test_a_child_call_returns_its_result_and_raises_its_error():
    assert isolated.call(divmod, 7, 2) == (3, 1)
    with pytest.raises(ZeroDivisionError) as error:
        isolated.call(divmod, 1, 0)
    assert "in the child process:" in error.value.__notes__[0]
    assert isolated.call(print, "printed to stderr") is None     # the answer unspoilt
    with pytest.raises(isolated.ChildError, match="status 3 and no answer"):
        isolated.call(os._exit, 3)          # a child that dies (killed, out of memory)
    with pytest.raises(isolated.ChildError, match="Unpicklable: no"):
        isolated.call(eval, "(_ for _ in ()).throw(type('Unpicklable', (Exception,), {})"
                            "('no'))")


def test_a_child_has_this_sys_path_and_not_the_callers_main_module():
    """Not multiprocessing's spawn, which ran the caller's main module (the ``elbctl``
    console script: the whole CLI) again in the child and imported multiprocessing."""
    assert isolated.call(eval, "__import__('sys').path") == sys.path
    modules = isolated.call(eval, "sorted(__import__('sys').modules)")
    assert "dcnet.metrics.isolated" in modules
    assert not [m for m in modules if m.startswith(("multiprocessing", "concurrent", "click",
                                                     "dcnet.cli", "__mp_main__", "pytest"))]


def test_trim_runs_where_glibc_has_it():
    assert isolated.trim() is True     # Debian: glibc


def test_one_heap_is_accepted_by_glibc():
    assert isolated.one_heap() is True


def test_without_an_ipvs_source_the_vips_are_not_indexed(tmp_path):
    path = write_model(tmp_path, model_text())
    watch = IsolatedWatch({"haproxy": {}}, path, interval=0, vips=False)
    assert watch.current.carriers == {} and watch.current.service_carriers
    assert watch.current.service_carriers == ServiceIndex.of(load_model(path)).service_carriers


def test_the_served_body_is_the_exposition_plain_and_gzipped():
    """Written piece by piece without Content-Length (HTTP/1.0 ends the body by closing):
    the same bytes as ``generate()``, gzip only when asked, a failing collector a 500."""
    import gzip
    import urllib.error
    import urllib.request

    from dcnet.metrics.elb import ELBCollector
    from dcnet.metrics.exposition import Exposition
    from dcnet.metrics.server import serve
    from tests.unit.test_metrics_cardinality import haproxy

    exposition = Exposition()
    exposition.register(ELBCollector(haproxy_stat=haproxy(3)))
    with serve(exposition, "127.0.0.1:0") as server:
        with urllib.request.urlopen(server.url, timeout=30) as answer:
            plain = answer.read()
            assert answer.headers.get("Content-Encoding") is None
        request = urllib.request.Request(server.url, headers={"Accept-Encoding": "gzip"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.headers.get("Content-Encoding") == "gzip"
            zipped = gzip.decompress(answer.read())
    assert plain == zipped == exposition.generate()
    assert b'dcnet_haproxy_backend_sessions{port="80",service="job.web' in plain

    class Broken:
        def chunks(self):
            raise RuntimeError("collector bug")

    failing = Exposition()
    failing.sources.append(Broken())
    with serve(failing, "127.0.0.1:0") as server:
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(server.url, timeout=30)
        error.value.close()
    assert error.value.code == 500


def test_the_exposition_server_answers_other_requests_with_errors_without_http_server():
    """404 for another path, 501 for another method, 400 for a malformed request; and
    serving an exposition does not import http.server (ssl, email: 2 MiB)."""
    import socket
    import subprocess
    import sys

    from dcnet.metrics.exposition import Exposition
    from dcnet.metrics.server import serve

    def ask(server, request: bytes) -> bytes:
        with socket.create_connection((server.host, server.port), timeout=30) as conn:
            conn.sendall(request)
            out = b""
            while data := conn.recv(65536):
                out += data
        return out

    with serve(Exposition(), "127.0.0.1:0") as server:
        assert ask(server, b"GET /x HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 404 ")
        assert ask(server, b"POST /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.0 501 ")
        assert ask(server, b"garbage\r\n\r\n").startswith(b"HTTP/1.0 400 ")
        assert ask(server, b"GET /metrics?x HTTP/1.1\r\nHost: a\r\n\r\n").startswith(
            b"HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4")
        # a client that stalls mid-request is dropped after the handler's timeout, and
        # a scrape meanwhile is answered
        server.httpd.RequestHandlerClass.timeout = 0.5
        with socket.create_connection((server.host, server.port), timeout=30) as stalled:
            stalled.sendall(b"GET /metrics HTTP/1.1\r\n")
            assert ask(server, b"GET / HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 200 ")
            assert stalled.recv(65536) == b""          # closed without an answer
    code = ("import sys; import dcnet.metrics.server; "
            "sys.exit('http.server' in sys.modules or 'ssl' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_a_model_packed_in_pieces_unpacks_equal(tmp_path):
    model = load_model(write_model(tmp_path, model_text()))
    assert len(model.services) == 2
    for per_piece, count in ((1, 3), (2, 2), (1000, 2)):    # the rest, then the services
        pieces = model_pieces.pack(model, per_piece)
        assert len(pieces) == count
        assert model_pieces.unpack(pieces) == model
    empty = dataclasses.replace(model, services=())
    assert model_pieces.unpack(model_pieces.pack(empty)) == empty


def test_the_index_of_the_pieces_is_the_index_of_the_model_byte_for_byte(tmp_path):
    model = load_model(write_model(tmp_path, model_text()))
    for per_piece in (1, 1000):
        unpacked = model_pieces.Pieces(model_pieces.pack(model, per_piece))
        assert list(unpacked.services) == list(model.services)
        for vips in (True, False):
            for services in (True, False):
                assert pickle.dumps(ServiceIndex.of(unpacked, vips, services), 5) == \
                    pickle.dumps(ServiceIndex.of(model, vips, services), 5)


def test_a_drift_check_given_the_pieces_and_the_digest_returns_that_digest(tmp_path):
    import zlib

    from dcnet.cli.elbctl_metrics import check_in_child

    path = write_model(tmp_path, model_text())
    with open(path, "rb") as fh:
        text = zlib.compress(fh.read())
    digest, index, drifts, pieces = check_in_child({}, path, text, 5.0, {}, None, False)
    assert drifts == {}
    expected = ServiceIndex.of(load_model(path), services=False)     # no haproxy target
    assert index == pickle.dumps(expected, pickle.HIGHEST_PROTOCOL)
    assert pieces == model_pieces.pack(load_model(path))    # packed as read: the same
    assert check_in_child({}, path, text, 5.0, {}, None, True) == (digest, index, {}, pieces)
    assert check_in_child({}, path, None, 5.0, {}, None, True, pickled=pieces) == (
        digest, index, {}, None)
    assert check_in_child({}, path, None, 5.0, {}, digest, True, pickled=pieces) == (
        digest, None, {}, None)
