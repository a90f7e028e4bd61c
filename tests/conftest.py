"""Test-suite wiring: the lab fixtures and the kernel-lab runner as pytest plugins."""

pytest_plugins = ["dcnet.lab.pytest_lab", "dcnet.lab.pytest_kernel_lab", "dcnet.lab.pytest_etcd",
                  "dcnet.lab.pytest_exit_guard"]
