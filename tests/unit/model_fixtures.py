"""A small valid model as text, and helpers to break it one rule at a time."""

from __future__ import annotations

import copy

import yaml

JOB_A = "job.web_service.shop_cluster.prod_pdl.retail_owt.sre_cop.example"
JOB_B = "job.api_service.checkout_cluster.prod_pdl.retail_owt.sre_cop.example"

BASE = {
    "version": 1,
    "carriers": [
        {"name": "telecom", "uplink": "ctc0", "gateway": "198.51.100.1", "table": 101,
         "vip_ranges": ["198.51.100.0/26"], "cidrs": "telecom.txt"},
        {"name": "bgp", "uplink": "bgp0", "gateway": "203.0.113.1", "table": 104,
         "vip_ranges": ["203.0.113.0/24"], "default": True},
    ],
    "services": [
        {"job": JOB_A,
         "vips": {"telecom": "198.51.100.10", "bgp": "203.0.113.10"},
         "ports": [{"port": 80, "scheduler": "wrr", "forward": "nat", "target_port": 8080}],
         "real_servers": [{"address": "10.0.0.1", "weight": 10}, {"address": "10.0.0.2"}],
         "health_check": {"type": "http", "path": "/healthz", "interval": 2, "timeout": 1}},
        {"job": JOB_B,
         "vips": {"bgp": "203.0.113.11"},
         "ports": [{"port": 443, "scheduler": "rr", "forward": "dr"}],
         "real_servers": [{"address": "10.0.0.3"}]},
    ],
}

FILES = {"telecom.txt": "# telecom clients\n192.0.2.0/26\n100.64.1.0/24\n"}


def model_text(mutate=None) -> str:
    """The base model as YAML, after ``mutate(data)`` changed a deep copy of it."""
    data = copy.deepcopy(BASE)
    if mutate:
        mutate(data)
    return yaml.safe_dump(data, sort_keys=False)


def read_file(files=None):
    files = FILES if files is None else files

    def read_text(name: str) -> str:
        if name not in files:
            raise FileNotFoundError(2, "No such file or directory", name)
        return files[name]
    return read_text
