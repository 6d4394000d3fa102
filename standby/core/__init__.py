"""The pure core: models, timing rules, the wire codec's parts, the two machines.

Everything here is sans-I/O: no clock, no sockets, no processes, no
randomness. The election (standby side) and the lifecycle (primary side)
take ``now`` and inputs, and return effects. Its modules are private; the
public faces are :mod:`standby`, :mod:`standby.effects`, :mod:`standby.errors`
and :mod:`standby.wire` (see ``docs/architecture.md``).
"""
