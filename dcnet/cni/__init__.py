"""The CNI plugin (MACVLAN with DHCP, flannel-style host-gw) and its node agent."""
