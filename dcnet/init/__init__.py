"""``dcnet-init``: the container init that registers with the ELB and leaves it cleanly.

- :mod:`dcnet.init.config`: the command line and the environment files (no I/O beyond
  reading those files);
- :mod:`dcnet.init.health`: health checks (TCP, HTTP, command) with rise/fall, and the
  health endpoint;
- :mod:`dcnet.init.hooks`: hook commands (ELB registration through ``elbctl backend``
  and the operator's own), run as children of the init;
- :mod:`dcnet.init.supervisor`: PID 1 duties (process group, signal forwarding,
  reaping every zombie, exit codes) and the lifecycle: start -> healthy -> register ->
  (SIGTERM) drain -> stop the app -> deregister -> exit.

Only the standard library is imported on this path: an init must start fast.
"""
