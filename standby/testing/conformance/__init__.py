"""Conformance suites for adapter authors: transports, atomic claims, runtimes.

The public face is :mod:`standby.testing` (``check_relay_transport``,
``check_atomic_claims``, ``check_container_runtime``).
"""
