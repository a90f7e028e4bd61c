"""The chaos army (issue #20): fault experiments (:mod:`dcnet.chaos.experiment`,
:mod:`dcnet.chaos.runner`, :mod:`dcnet.chaos.faults`, :mod:`dcnet.chaos.journal`) and the
drift watcher's audit events (:mod:`dcnet.chaos.drift`). The model linter is
:mod:`dcnet.lint`."""
