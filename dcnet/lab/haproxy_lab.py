"""A small HAProxy lab for tests and benchmarks: client -- lb -- switch -- real servers.

``client`` (10.251.0.2) reaches ``lb`` (10.251.0.1, where HAProxy runs) over one veth;
``lb`` reaches ``rs1..rsN`` (10.252.0.11..) over the bridge in ``sw``. Each real server
runs :func:`serve` (``python -m dcnet.lab.haproxy_lab PORT ADDRESS``), a threaded HTTP
server answering 200 to every path with its own address. :func:`model_data` builds a
service model for it, served on the lb's client-side address. Pure data except
:func:`serve`, :func:`start_haproxy` and :class:`LoadRun`, which act on a built lab.
"""

from __future__ import annotations

import copy
import http.server
import json
import os
import sys
import time

import yaml

from dcnet.haproxy.daemon import wait_ready, write_initial
from dcnet.haproxy.paths import Paths
from dcnet.model import Model, parse_model

LB_ADDRESS = "10.251.0.1"
CLIENT_ADDRESS = "10.251.0.2"
SERVICE_PORT, SERVER_PORT = 80, 8080
JOB = "job.web_service.shop_cluster.prod_pdl.retail_owt.sre_cop.example"


def job_name(n: int) -> str:
    """Service n's JOBNAME (service 0 is :data:`JOB`)."""
    return JOB if n == 0 else JOB.replace("service.shop_", f"service.shop{n}_")


def server_address(index: int) -> str:
    """rs1 is 10.252.0.11."""
    return f"10.252.0.{10 + index}"


def topology(servers: int, python: str = sys.executable) -> dict:
    hosts = ["client", "lb", "sw", *(f"rs{i}" for i in range(1, servers + 1))]
    links = [{"a": {"host": "client", "ifname": "eth0", "addresses": [f"{CLIENT_ADDRESS}/24"]},
              "b": {"host": "lb", "ifname": "c0", "addresses": [f"{LB_ADDRESS}/24"]}},
             {"a": {"host": "lb", "ifname": "s0", "addresses": ["10.252.0.1/24"]},
              "b": {"host": "sw", "ifname": "to-lb", "bridge": "br0"}}]
    processes = []
    for i in range(1, servers + 1):
        links.append({"a": {"host": f"rs{i}", "ifname": "eth0",
                            "addresses": [f"{server_address(i)}/24"]},
                      "b": {"host": "sw", "ifname": f"to-rs{i}", "bridge": "br0"}})
        processes.append({"name": f"rs{i}-http", "host": f"rs{i}",
                          "ready_tcp_port": SERVER_PORT,
                          "argv": [python, "-m", "dcnet.lab.haproxy_lab", str(SERVER_PORT),
                                   server_address(i)]})
    return {"hosts": hosts, "bridges": [{"name": "br0", "host": "sw"}], "links": links,
            "processes": processes}


BASE = {
    "version": 1,
    "carriers": [{"name": "bgp", "uplink": "bgp0", "gateway": "203.0.113.1", "table": 104,
                  "vip_ranges": ["203.0.113.0/24"], "default": True}],
    "haproxy": {"listen": [LB_ADDRESS], "spare_slots": 4, "hard_stop_after": 30,
                "maxconn": 2000},
    "services": [],
}


def model_data(servers: dict[str, int], services: int = 1, **haproxy) -> dict:
    """A model: ``services`` services (ports 80, 81, ...) over ``servers`` {addr: weight}."""
    data = copy.deepcopy(BASE)
    data["haproxy"].update(haproxy)
    for n in range(services):
        job = job_name(n)
        data["services"].append({
            "job": job, "vips": {"bgp": f"203.0.113.{10 + n}"},
            "ports": [{"port": SERVICE_PORT + n, "scheduler": "wrr", "forward": "nat",
                       "target_port": SERVER_PORT}],
            "real_servers": [{"address": a, "weight": w} for a, w in servers.items()],
            "health_check": {"type": "http", "path": "/healthz", "interval": 1,
                             "timeout": 1}})
    return data


def model_of(data: dict, source: str = "<haproxy lab>") -> Model:
    return parse_model(yaml.safe_dump(data), source=source)


def start_haproxy(lab, model: Model, paths: Paths, host: str = "lb"):
    """Render the first file and start the master-worker HAProxy inside ``host``."""
    write_initial(model, paths)
    popen = lab.start(host, paths.master_argv(), name="haproxy")
    try:
        wait_ready(paths, popen)
    except Exception as exc:
        log = os.path.join(lab.log_dir or "", "haproxy.log")
        if os.path.exists(log):
            with open(log, errors="replace") as handle:
                exc.add_note("HAProxy log:\n" + handle.read()[-2000:])
        raise
    return popen


class LoadRun:
    """The load generator running inside the lab's client; ``stop()`` returns its result."""

    def __init__(self, lab, workdir: str, target: str, host: str = "client",
                 duration: float = 300.0, max_requests: int = 1_000_000,
                 concurrency: int = 4, name: str = "loadgen"):
        self.out = os.path.join(workdir, f"{name}.json")
        self.stop_file = os.path.join(workdir, f"{name}.stop")
        ready = os.path.join(workdir, f"{name}.ready")
        self.popen = lab.start(host, [
            sys.executable, "-m", "dcnet.lab.haproxy_loadgen", "--target", target,
            "--duration", str(duration), "--max-requests", str(max_requests),
            "--concurrency", str(concurrency), "--stop-file", self.stop_file,
            "--ready-file", ready, "--out", self.out], name=name)
        deadline = time.monotonic() + 15
        while not os.path.exists(ready):
            if self.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"load generator did not get a first answer from {target}")
            time.sleep(0.02)

    def stop(self, timeout: float = 30.0) -> dict:
        with open(self.stop_file, "w") as handle:
            handle.write("stop\n")
        self.popen.wait(timeout)
        with open(self.out) as handle:
            return json.load(handle)


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"ok {self.server.server_address[0]}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    request_queue_size = 512
    daemon_threads = True


def serve(port: int, address: str) -> None:
    """A real server for the lab: 200 to every GET."""
    _Server((address, port), _Handler).serve_forever()


if __name__ == "__main__":
    serve(int(sys.argv[1]), sys.argv[2])
