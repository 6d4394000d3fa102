"""newest_per_key compares message texts only on a true tie, and picks what the full rule picks.

The rule: per addressable key, the genuine version (not future-dated) with
the newest timestamp, a withdrawn claim before the claim it withdraws, then
the greater ``repr``; the result sorted by (timestamp, withdrawn, ``repr``).
The implementation writes a ``repr`` only when the rest ties; this checks it
against the rule written out in full, with many ties.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from test_memory_adapters import claim

from standby.core._models import Envelope, Heartbeat, Message, PromotionClaim
from standby.core._relay_messages import (
    addressable_key,
    is_newer,
    message_timestamp,
    newest_per_key,
)

_messages = st.one_of(
    st.builds(
        claim,
        st.sampled_from(["a", "b"]),
        st.sampled_from([1.0, 2.0, 3.0]),
        epoch=st.integers(1, 3),
        withdrawn=st.booleans(),
    ),
    st.builds(
        lambda who, at: Heartbeat(provider=who, timestamp=at),
        st.sampled_from(["a", "b"]),
        st.sampled_from([1.0, 2.0, 3.0]),
    ),
)


def _full_rank(message: Message, not_after: float | None) -> tuple[int, float, int, str]:
    withdrawn = 1 if isinstance(message, PromotionClaim) and message.withdrawn else 0
    stamp = message_timestamp(message)
    genuine = 0 if not_after is not None and stamp > not_after else 1
    return (genuine, stamp, withdrawn, repr(message))


def _by_the_full_rule(
    envelopes: list[Envelope[Message]], not_after: float | None
) -> list[Envelope[Message]]:
    best: dict[tuple[str, ...], tuple[tuple[int, float, int, str], Envelope[Message]]] = {}
    for envelope in envelopes:
        key = addressable_key(envelope.signer, envelope.message)
        rank = _full_rank(envelope.message, not_after)
        if key not in best or rank > best[key][0]:
            best[key] = (rank, envelope)
    return [e for _rank, e in sorted(best.values(), key=lambda item: item[0][1:])]


@given(
    st.lists(st.tuples(_messages, st.integers(0, 2), st.booleans()), max_size=12),
    st.sampled_from([None, 1.5, 2.5]),
)
def test_newest_per_key_follows_the_full_rule(
    drawn: list[tuple[Message, int, bool]], not_after: float | None
) -> None:
    envelopes: list[Envelope[Message]] = []
    for message, relay, copy in drawn:
        signer = message.claimant if isinstance(message, PromotionClaim) else message.provider
        envelope = Envelope(message, signer, f"relay-{relay}", 0.0)
        envelopes.append(envelope)
        if copy:  # the same message from another relay: a tie on everything
            envelopes.append(Envelope(message, signer, f"relay-{relay + 1}", 0.0))
    assert newest_per_key(envelopes, not_after=not_after) == _by_the_full_rule(envelopes, not_after)


@given(_messages, _messages)
def test_is_newer_follows_the_full_rule(message: Message, than: Message) -> None:
    assert is_newer(message, than) == (_full_rank(message, None) > _full_rank(than, None))
