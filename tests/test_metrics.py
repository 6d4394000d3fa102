"""``standby.metrics``: a scrape of the collector after a real failover, on asyncio and trio."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _failover import Failover, anyio_backend, timing_for  # noqa: F401
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from standby.metrics import METRICS, NodeCollector

ROOT = Path(__file__).resolve().parent.parent


def scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of one scrape, by name and sorted labels."""
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def value(samples: dict[Any, float], metric: str, **labels: str) -> float:
    return samples[(metric, tuple(sorted(labels.items())))]


@pytest.mark.anyio
async def test_a_scrape_after_a_failover_shows_the_new_primary_and_what_it_took(
    anyio_backend: Any,  # noqa: F811
) -> None:
    timing = timing_for(anyio_backend)
    run = Failover(timing)
    registry = CollectorRegistry()
    registry.register(NodeCollector(run.nodes["sb0"], run.nodes["sb1"]))
    scraped: dict[Any, float] = {}

    heard: list[float | None] = []

    def inspect(failover: Failover) -> None:
        scraped.update(scrape(registry))
        heard.append(failover.nodes["sb1"].election.last_heartbeat("sb0"))

    await run.run(inspect=inspect)

    # standby 0 runs w1 as primary of epoch 1; standby 1 follows it
    assert value(scraped, "leader_election_master_status", name="w1", node="sb0") == 1
    assert value(scraped, "leader_election_master_status", name="w1", node="sb1") == 0
    assert value(scraped, "standby_workload_epoch", node="sb0", workload="w1") == 1
    assert value(scraped, "standby_workload_epoch", node="sb1", workload="w1") == 1
    assert (
        value(
            scraped,
            "standby_workload_role",
            node="sb0",
            workload="w1",
            role="primary",
            state="live",
        )
        == 1
    )
    sb1_roles = [
        key for key in scraped if key[0] == "standby_workload_role" and ("node", "sb1") in key[1]
    ]
    assert [dict(labels)["role"] for _, labels in sb1_roles] == ["standby"]
    remaining = value(scraped, "standby_lease_remaining_seconds", node="sb0", workload="w1")
    assert 0 < remaining <= timing.lease
    assert ("standby_lease_remaining_seconds", (("node", "sb1"), ("workload", "w1"))) not in scraped
    # sb1 stands by for sb0 now and hears its heartbeats
    beat = value(
        scraped, "standby_primary_last_heartbeat_timestamp_seconds", node="sb1", primary="sb0"
    )
    assert heard == [beat]
    # the counters of the takeover
    assert value(scraped, "standby_failovers_total", node="sb0") == 1
    assert value(scraped, "standby_failovers_total", node="sb1") == 0
    assert value(scraped, "standby_claims_won_total", node="sb0") == 1
    assert value(scraped, "standby_claims_won_total", node="sb1") == 0
    assert value(scraped, "standby_spawn_failures_total", node="sb0", role="standby") == 0
    assert value(scraped, "standby_workloads_cannot_start_total", node="sb0") == 0
    # every counter of status() is there under its own name
    counters = run.nodes["sb0"].status().counters
    exported = {
        dict(labels)["counter"]
        for name, labels in scraped
        if name == "standby_node_counter_total" and ("node", "sb0") in labels
    }
    assert exported >= {"promotions", "election.claims_won", "heartbeats"}
    assert exported <= set(counters)
    assert {name for name, _ in scraped} <= set(METRICS)


@pytest.mark.anyio
async def test_quorum_shortfalls_by_stage_and_relay_refusals_are_counted(
    anyio_backend: Any,  # noqa: F811
) -> None:
    timing = timing_for(anyio_backend)
    run = Failover(timing)
    # two of the three relays are down for the standbys from the start: no read quorum
    registry = CollectorRegistry()
    registry.register(NodeCollector(run.nodes["sb1"]))
    run.network.partition("sb1", run.network.relays[:2])
    scraped: dict[Any, float] = {}

    def inspect(failover: Failover) -> None:
        scraped.update(scrape(registry))

    await run.run(inspect=inspect)

    shortfalls = {
        dict(labels)["stage"]: v
        for (name, labels), v in scraped.items()
        if name == "standby_quorum_shortfalls_total"
    }
    counters = run.nodes["sb1"].status().counters
    assert shortfalls
    assert sum(shortfalls.values()) <= counters["quorum_shortfall"]
    assert value(scraped, "standby_relay_refusals_total", node="sb1") > 0


def test_the_collector_registers_nothing_on_the_default_registry() -> None:
    from prometheus_client import REGISTRY

    before = set(REGISTRY._names_to_collectors)  # type: ignore[attr-defined]
    NodeCollector()
    import standby.metrics  # noqa: F401

    assert set(REGISTRY._names_to_collectors) == before  # type: ignore[attr-defined]
    assert scrape(_registry_of(NodeCollector())) == {}


def _registry_of(collector: NodeCollector) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(collector)
    return registry


def test_without_the_extra_the_import_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "try:\n"
        "    import standby.metrics\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout
    assert "standby.metrics needs" in out
    assert "pip install 'standby[metrics]'" in out


def test_the_metrics_face_is_pinned() -> None:
    import standby.metrics

    assert set(standby.metrics.__all__) == {"METRICS", "NodeCollector", "StatusSource"}
    for name in ("NodeCollector", "StatusSource"):
        assert getattr(standby.metrics, name).__module__ == "standby.metrics"
