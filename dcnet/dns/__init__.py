"""Carrier-aware DNS: a name for each ELB service, answered per carrier through BIND views."""
