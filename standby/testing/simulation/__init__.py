"""The simulator of the shipped node, its checkers, campaigns and command lines.

The public face is :mod:`standby.testing` (``Simulation``, ``run_campaign``,
``shrink``, ...); ``python -m standby simulate`` and ``campaign`` are here.
"""
