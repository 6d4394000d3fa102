"""Runtimes whose workloads run under a lease supervisor process.

The supervisor outlives the node and stops the workload at its lease end
(guarantee 4). The public faces are :mod:`standby.adapters.process` and
:mod:`standby.adapters.podman` and :mod:`standby.adapters.docker`
(both built on ``_engine.py``).
"""
