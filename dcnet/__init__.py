"""dcnet: the network and load-balancer data plane of a container platform.

Subpackages: ``model`` (the one declarative service model), ``cni`` (the CNI plugin and
node agent), ``lvs`` (IPVS programming, carrier routing, keepalived), ``haproxy``,
``dns`` (carrier-aware BIND views), ``netbench`` (network benchmarks), ``sysio`` (the
thin layer for kernel and process I/O), ``lab`` (network-namespace topologies and the
QEMU kernel lab) and ``cli`` (the console scripts).
"""

__version__ = "0.1.0"
