"""The ELB's desired state in etcd: model revisions, registered backends, director status.

``elbctl push|history|rollback`` keep model revisions, ``elbctl backend ... --store``
registers real servers per service, ``elbctl agent`` makes one director (LVS, HAProxy or
DNS) follow the current revision plus the registered backends, and ``elbctl acl`` sets up
etcd roles. Pure parts: :mod:`keys` (key layout), :mod:`records` (stored documents),
:mod:`desired` (the in-memory desired state an agent follows), :mod:`effective` (model +
registry), :mod:`acl` (roles and grants). I/O: :mod:`bundle` (model files), :mod:`store`
(etcd operations), :mod:`agent`, :mod:`targets`, :mod:`cli`. See docs/elb-etcd.md.
"""
