"""IPVS schedulers mapped to HAProxy ``balance`` algorithms, with where they differ.

The model names IPVS schedulers (every one the kernel ships); HAProxy has its own set of
algorithms. :data:`TABLE` maps each scheduler to the closest algorithm and says whether
the match is exact. Every algorithm chosen here is *dynamic* in HAProxy, so weights and
server state can change at runtime. The table is rendered into docs/haproxy.md and as a
comment above each backend.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Balance:
    """How one IPVS scheduler is rendered: ``balance`` line, extra lines, fidelity."""

    algorithm: str
    options: tuple[str, ...] = ()
    exact: bool = True
    note: str = ""


_CONSISTENT = ("hash-type consistent",)

TABLE: dict[str, Balance] = {
    "rr": Balance("roundrobin", exact=False,
                  note="IPVS rr ignores weights (other than 0); HAProxy roundrobin honours them"),
    "wrr": Balance("roundrobin"),
    "lc": Balance("leastconn", exact=False,
                  note="HAProxy leastconn is weighted (as IPVS wlc); IPVS lc is not"),
    "wlc": Balance("leastconn"),
    "sed": Balance("leastconn", exact=False,
                   note="no shortest-expected-delay in HAProxy; weighted least connections"),
    "nq": Balance("leastconn", exact=False,
                  note="no never-queue in HAProxy; weighted least connections"),
    "lblc": Balance("leastconn", exact=False,
                    note="destination locality has no meaning behind one frontend per "
                         "VIP:port; weighted least connections"),
    "lblcr": Balance("leastconn", exact=False,
                     note="destination locality has no meaning behind one frontend per "
                          "VIP:port; weighted least connections"),
    "dh": Balance("first", exact=False,
                  note="one frontend has one destination, so IPVS dh sends it all to one "
                       "server; HAProxy first does the same (lowest id first)"),
    "sh": Balance("source", _CONSISTENT),
    "mh": Balance("source", _CONSISTENT, exact=False,
                  note="Maglev hashing approximated by consistent hashing of the source"),
    "fo": Balance("first", exact=False,
                  note="HAProxy first picks servers by id order, IPVS fo by highest weight"),
    "ovf": Balance("first", exact=False,
                   note="HAProxy first fills servers by id up to maxconn; IPVS ovf by weight "
                        "up to the weight in connections"),
    "twos": Balance("random(2)",
                    note="power of two random choices on both sides"),
}


def balance_for(scheduler: str) -> Balance:
    """The HAProxy algorithm for an IPVS scheduler (the model guarantees it is known)."""
    return TABLE[scheduler]


def markdown_table() -> str:
    """The mapping as a Markdown table, for the documentation."""
    rows = ["| IPVS scheduler | HAProxy | exact | difference |", "| --- | --- | --- | --- |"]
    for name, b in sorted(TABLE.items()):
        algo = "; ".join((f"balance {b.algorithm}", *b.options))
        rows.append(f"| {name} | `{algo}` | {'yes' if b.exact else 'no'} | {b.note or '-'} |")
    return "\n".join(rows)
