"""Timeline lines for the container runs (a node event's line is its own :meth:`timeline`)."""

from __future__ import annotations

from typing import Any

from ...adapters.memory import RuntimeRecord
from ...core._models import TOKEN_EPOCH_STRIDE

__all__ = ["runtime_lines"]

Payload = tuple[str, tuple[Any, ...]]


def runtime_lines(
    record: RuntimeRecord, workload_id: str, now: float
) -> list[tuple[float, str, Payload]]:
    """Timeline lines for the container runs of ``workload_id`` up to ``now``."""
    lines: list[tuple[float, str, Payload]] = []
    for event in record.events:
        if event.workload_id != workload_id or event.at > now:
            continue
        token = event.fencing_token
        if event.kind == "started":
            payload: Payload = (
                "container running (epoch %d, token %d)",
                (token // TOKEN_EPOCH_STRIDE, token),
            )
        elif event.kind in ("stopped", "exited", "expired"):
            detail = f" ({event.detail})" if event.detail else ""
            payload = ("container gone (token %d)%s", (token, detail))
        else:
            continue
        lines.append((event.at, event.host, payload))
    return lines
