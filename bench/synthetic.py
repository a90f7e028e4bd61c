"""The synthetic service model the benchmarks share (bench/dns_render.py, bench/model_load.py).

``write_model(directory, services)`` writes ``services`` services with a VIP on all four
carrier lines (SERVICES_PER_VIP services per VIP address, on different ports), one real
server each, and a client list of PREFIXES /24s per carrier; returns the model's path.
Imported by the bench scripts as a sibling module (they run with bench/ on sys.path).
"""

from __future__ import annotations

from pathlib import Path

import yaml

CARRIERS = [("telecom", 172, 16, 100), ("unicom", 172, 17, 101), ("mobile", 172, 18, 102),
            ("bgp", 172, 19, 103)]
PREFIXES = 500
SERVICES_PER_VIP = 4


def write_model(directory: Path, services: int) -> Path:
    carriers = []
    for index, (name, a, b, table) in enumerate(CARRIERS):
        entry = {"name": name, "uplink": f"up{index}", "gateway": f"{a}.{b}.255.254",
                 "table": table, "vip_ranges": [f"{a}.{b}.0.0/16"]}
        if name == "bgp":
            entry["default"] = True
        else:
            lines = [f"{10 + index}.{i // 256}.{i % 256}.0/24" for i in range(PREFIXES)]
            if name == "telecom":
                lines[0] = "100.64.0.0/24"
            (directory / f"{name}.txt").write_text("\n".join(lines) + "\n")
            entry["cidrs"] = f"{name}.txt"
        carriers.append(entry)
    items = []
    for i in range(services):
        # SERVICES_PER_VIP services share each VIP address, on different ports
        hi, lo = divmod(i // SERVICES_PER_VIP + 1, 250)
        # a VIP on every carrier line: each of the four views answers its own VIP
        items.append({
            "job": f"job.j{i}_service.s{i}_cluster.c{i % 50}_pdl.p{i % 10}_owt.o_cop.bench",
            "vips": {name: f"{a}.{b}.{hi}.{lo}" for name, a, b, _ in CARRIERS},
            "ports": [{"port": 8000 + i % SERVICES_PER_VIP}],
            "real_servers": [{"address": f"10.200.{hi}.{lo}"}],
        })
    path = directory / "model.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "carriers": carriers,
                                    "dns": {"zone": "elb.bench"},
                                    "lvs": {"rule_priority_min": 1,
                                            "rule_priority_max": 32765},
                                    "services": items}, sort_keys=False))
    return path
