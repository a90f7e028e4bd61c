"""The chaos army (issue #20): fault experiments (:mod:`dcnet.chaos.experiment`,
:mod:`dcnet.chaos.runner`, :mod:`dcnet.chaos.faults`, :mod:`dcnet.chaos.journal`,
:mod:`dcnet.chaos.probes`; the link, traffic-control and DHCP faults in
:mod:`dcnet.chaos.linkfaults`, :mod:`dcnet.chaos.qdisc`, :mod:`dcnet.chaos.dhcpchurn`),
the drift watcher's audit events (:mod:`dcnet.chaos.drift`) and the janitor
(:mod:`dcnet.chaos.janitor` for ELB targets, :mod:`dcnet.chaos.janitor_cni` for
host-gw). The model linter is :mod:`dcnet.lint`."""
