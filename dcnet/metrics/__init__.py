"""Prometheus metrics of every dcnet daemon (issue 18).

- :mod:`dcnet.metrics.server`: the HTTP exposition server (optionally listening inside a
  network namespace) and address parsing;
- :mod:`dcnet.metrics.cardinality`: the bound on per-server series (per-service
  aggregates above a threshold);
- :mod:`dcnet.metrics.status`: the status file each target run leaves (applies, syncs,
  durations, writes) and the optional Pushgateway push of short-lived commands;
- :mod:`dcnet.metrics.elb`: the ELB collector (HAProxy runtime API, IPVS procfs, apply
  status, drift) behind ``elbctl exporter`` and ``elbctl agent --metrics-address``;
- :mod:`dcnet.metrics.cni`: the counters of ``dcnet-agent``;
- :mod:`dcnet.metrics.sd`: the Prometheus file-SD document derived from the model;
- ``rules/dcnet.rules.yml``: recording and alert rules.

Labels name services (the JOBNAME), its tags, ports and carriers: never clients or
connections, so the series count is bounded by the model.
"""
