"""Hypothesis entry point: strategies for ``standby``'s types in ``st.from_type``.

Hypothesis calls :func:`_register` when it is imported (entry point group
``hypothesis``), so ``st.from_type(StandbySlot)``, ``st.builds(...)`` and
type-annotated ``@given`` arguments produce valid ``standby`` values.
"""

from __future__ import annotations

import typing
from typing import Any

__all__: list[str] = []


def _register() -> None:
    """Register a type strategy for every ``standby`` model and message."""
    from hypothesis import strategies as st

    from ..core._models import (
        Envelope,
        Heartbeat,
        LeaseRevocation,
        PromotionAnnouncement,
        PromotionClaim,
        StandbySlot,
        Topology,
    )
    from ..core._timing import Timing
    from . import strategies

    def slot_strategy(slot_type: type[Any]) -> st.SearchStrategy[Any]:
        args = typing.get_args(slot_type)
        if args and args[0] is not Any:
            return strategies.slots(specs=st.from_type(args[0]))
        return strategies.slots()

    def envelope_strategy(envelope_type: type[Any]) -> st.SearchStrategy[Any]:
        args = typing.get_args(envelope_type)
        if args and args[0] is not Any:
            return strategies.envelopes(st.from_type(args[0]))
        return strategies.envelopes()

    st.register_type_strategy(StandbySlot, slot_strategy)
    st.register_type_strategy(Envelope, envelope_strategy)
    st.register_type_strategy(Timing, strategies.timings())
    st.register_type_strategy(Topology, strategies.topologies())
    st.register_type_strategy(Heartbeat, strategies.heartbeats())
    st.register_type_strategy(LeaseRevocation, strategies.revocations())
    st.register_type_strategy(PromotionClaim, strategies.claims())
    st.register_type_strategy(PromotionAnnouncement, strategies.announcements())
