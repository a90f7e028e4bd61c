"""netbench: benchmark harnesses that build each network mode in namespaces and measure it."""
