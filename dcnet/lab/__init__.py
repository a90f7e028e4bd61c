"""Labs: network-namespace topologies described as data, and the QEMU kernel lab."""
