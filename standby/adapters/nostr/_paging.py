"""Reading a filter's whole answer from a relay that caps each answer.

A relay may answer a filter with at most so many events (rust-nostr's
``LocalRelay``: 500, whatever ``limit`` asks for; NIP-01 lets a relay cap
it). A query that stopped at the first answer would miss the older events,
and a read quorum that counted such an answer as complete could miss a
claim. So a query asks for pages: each filter with ``limit`` set to the page
size, then, while a page comes back full, again with ``until`` set to the
oldest ``created_at`` seen (inclusive: events of that second may not all have
fitted). A full page that brings no event not seen before means more than a
page of events share one second: the relay cannot be read to the end, and
the caller must not count its answer (:class:`PagingStuck`).

Many events of one second are the usual case, not a corner: a standby that
claims hundreds of workloads at once stamps its claims with the same second.
So a filter that names many ``d`` tags is first split (:func:`first_pages`)
into filters of at most ``page_size // CLAIMANTS_PER_KEY`` tags each, whose
whole answer fits in one page while no ``d`` tag has more than
``CLAIMANTS_PER_KEY`` authors.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from ._keys import NostrEvent

__all__ = ["CLAIMANTS_PER_KEY", "DEFAULT_PAGE_SIZE", "PagingStuck", "first_pages", "next_page"]

#: Events asked for per filter and page: no more than the relays in use answer.
DEFAULT_PAGE_SIZE = 500
#: Authors expected at most per ``d`` tag (the standbys of one workload).
CLAIMANTS_PER_KEY = 10


class PagingStuck(Exception):
    """A full page held no new event: more than a page of events share one second."""


def first_pages(flt: Mapping[str, Any], page_size: int) -> list[dict[str, Any]]:
    """The first page of ``flt``, split by its ``d`` tags, each asking for ``page_size`` events."""
    tags = flt.get("#d")
    per = max(1, page_size // CLAIMANTS_PER_KEY)
    if tags is None or len(tags) <= per:
        return [{**flt, "limit": page_size}]
    return [
        {**flt, "#d": list(tags[i : i + per]), "limit": page_size} for i in range(0, len(tags), per)
    ]


def next_page(
    asked: Mapping[str, Any],
    page: Sequence[NostrEvent],
    seen: Collection[str],
    page_size: int,
) -> dict[str, Any] | None:
    """The filter of the page after ``page`` (the answer to ``asked``); ``None`` when done.

    ``seen`` holds the ids of the events read before ``page``. Raises
    :class:`PagingStuck` when ``page`` is full but brought nothing new.
    """
    if len(page) < page_size:
        return None
    if all(event.id in seen for event in page):
        raise PagingStuck(
            f"more than {page_size} events at created_at {min(e.created_at for e in page)}: "
            "the relay's answer cannot be read to the end"
        )
    return {**asked, "until": min(event.created_at for event in page)}
