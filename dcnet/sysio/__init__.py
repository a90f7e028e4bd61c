"""The thin layer for kernel and process I/O: namespaces, netlink, sysctls, processes."""
