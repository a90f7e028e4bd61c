"""LVS/ELB: idempotent IPVS programming, carrier-aware policy routing and keepalived rendering."""
