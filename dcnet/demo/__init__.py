"""The ``dcnet-demo`` steps: one module per part of dcnet, each a ``demo(model, lab, report)``
run inside the live ELB lab (``dcnet.cli.demo`` lists them in order).

Demo code only: product packages never import this package; demos use the labs in
``dcnet.lab`` and the product code they show.
"""
