"""netbench: build each network mode in namespaces and measure it (issue 8).

Modules: ``definition`` (YAML definitions and their schema), ``catalogue`` (mode names and
paths), ``topologies`` (lab topologies as data), ``modes`` / ``cnimodes`` (building each
mode on the lab builder), ``live`` (a built mode and its servers), runners ``iperf3``,
``sockperf`` and ``connrate`` (+ the ``connprog`` client/server) with pure parsers,
``cpustat`` (/proc/stat), ``environment``, ``schedule`` (interleaved shuffled rounds),
``sampler`` (one sample), ``engine`` (``netbench run``), ``results`` (versioned result
files), ``stats`` / ``summary`` (medians, bootstrap, significance), ``report`` / ``plots``
/ ``compare`` and ``demo`` (the ``dcnet-demo`` step). See docs/netbench.md.
"""
