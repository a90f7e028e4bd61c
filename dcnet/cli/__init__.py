"""Console scripts: elbctl, netbench, dcnet-cni, dcnet-agent and the demo."""
