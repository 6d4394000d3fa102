"""End to end with real processes: three provider processes, real relays, ProcessRuntime.

Each provider is its own OS process running a :class:`StandbyNode` (the
primary and the second standby on asyncio, the first standby on trio) over
the three real Nostr relays of ``tests/_nostr_relays.py`` (the kill -9
scenario on both relay implementations), with a
:class:`ProcessRuntime` whose workloads are real processes. The scenarios
are ``examples/process_failover.py``'s; what ran when is read back from the
runtimes' own records (the supervisors' start and end times), so "never two
workloads at once" is checked on the instants the processes really ran.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _e2e import load_example
from _nostr_relays import RelayCluster, any_relays, local_relays, nostr_relays, relays  # noqa: F401

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux processes")

failover = load_example("process_failover")


def run(kind: str, relays: RelayCluster, base: Path) -> dict[str, Any]:  # noqa: F811
    tag = uuid.uuid4().hex[:10]
    result: dict[str, Any] = failover.scenario(
        base, relays.urls, kind, seed=tag, workload=f"job-{tag}"
    )
    print("\n".join(failover.timeline(result)))
    return result


def failover_at_the_lease_end(
    kind: str,
    relays: RelayCluster,  # noqa: F811
    base: Path,
    record_margin: Callable[[str, object], None],
    margin_name: str,
) -> tuple[dict[str, Any], Any]:
    """Scenario ``kind``: the old run ended by its supervisor at its lease end, then sb0's.

    Returns the result and the old run; records the margin as ``margin_name``.
    """
    result = run(kind, relays, base)
    old, new = result["runs"]
    assert (old["provider"], new["provider"]) == ("primary", "sb0")
    assert new["token"] > old["token"]
    # The node could not renew; its workload's supervisor stopped it at its lease end.
    assert old["reason"] == "lease-expired"
    assert result["acted_at"] < old["ended_at"] <= old["lease_end"] + failover.STOP_GRACE
    assert old["ended_at"] < new["started_at"]
    assert result["overlaps"] == []
    record_margin(margin_name, round(result["margin"], 3))
    return result, old


def test_kill_9_of_the_primary_node_its_workload_is_gone_before_the_standby_starts(
    any_relays: RelayCluster,  # noqa: F811
    tmp_path: Path,
    record_property: Any,
) -> None:
    """On both relay implementations (``nostr-relay`` and ``LocalRelay``)."""
    result, old = failover_at_the_lease_end(
        "kill", any_relays, tmp_path, record_property, "margin_after_kill_9"
    )
    # The nodes' event logs tell the same story, drawn by `python -m standby timeline`.
    picture = tmp_path / "kill.svg"
    assert failover.draw(tmp_path, str(picture)) == 0
    svg = picture.read_text(encoding="utf-8")
    assert f'data-token="{old["token"]}"' in svg
    assert f'data-token="{result["runs"][1]["token"]}"' in svg
    assert 'data-kind="kill"' in svg
    assert "two-live-window" not in svg


def test_sigstop_of_the_primary_node_its_supervisor_stops_the_workload_at_lease_end(
    relays: RelayCluster,  # noqa: F811
    tmp_path: Path,
    record_property: Any,
) -> None:
    result, old = failover_at_the_lease_end(
        "freeze", relays, tmp_path, record_property, "margin_after_sigstop"
    )
    # Stopped by its supervisor while the node was frozen...
    assert old["ended_at"] < result["woke_at"]
    # ...and the woken node fenced instead of running it again.
    woken = [
        (e["event"], e.get("text", ""))
        for e in result["events"]
        if e["who"] == "primary" and e["at"] >= result["woke_at"]
    ]
    assert ("LifecycleChanged", "old=LIVE new=FENCED reason=lease expired") in woken
    assert [r["provider"] for r in result["runs"]].count("primary") == 1


def test_a_restarted_primary_node_adopts_the_workload_its_supervisor_kept(
    relays: RelayCluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    result = run("restart", relays, tmp_path)
    (only,) = result["runs"]
    # The one workload ran on: the new node process found it through a fresh
    # ProcessRuntime's list() and renewed its lease past the old end.
    assert (only["provider"], only["token"], only["ended_at"]) == ("primary", 0, None)
    assert only["lease_end"] > result["acted_at"] + failover.TIMING.lease
    reconciled = [e.get("text", "") for e in result["events"] if e["event"] == "Reconciled"]
    assert reconciled == ["action=adopted epoch=0 fencing_token=0 reason=lease still valid"]
    assert result["overlaps"] == []
