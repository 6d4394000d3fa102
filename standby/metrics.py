"""Prometheus metrics of running nodes: a collector the host registers on its own registry.

Needs the ``metrics`` extra (``pip install 'standby[metrics]'``: the
``prometheus-client`` package). Nothing here registers anything by itself:
the host builds a :class:`NodeCollector` over its nodes and registers it on
the registry it serves::

    from prometheus_client import CollectorRegistry, generate_latest
    from standby.metrics import NodeCollector

    registry = CollectorRegistry()
    registry.register(NodeCollector(node))
    text = generate_latest(registry)  # or start_http_server(port, registry=registry)

Each scrape takes one :meth:`~standby.node.StandbyNode.status` snapshot per
node and turns it into metric families; every series carries the node's
identity as the ``node`` label. The metrics, what they mean and alerts
worth setting on them are listed in ``docs/operations.md`` ("Metrics and
alerts"); :data:`METRICS` lists their names.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Final, Protocol

from .core._errors import missing_extra

try:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector
except ImportError as _exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise missing_extra("standby.metrics", "metrics", _exc) from _exc

from .node._types import RUNNING, NodeStatus

__all__ = ["METRICS", "NodeCollector", "StatusSource"]


class StatusSource(Protocol):
    """What the collector needs of a node: a :class:`~standby.node.NodeStatus` snapshot."""

    def status(self) -> NodeStatus: ...


#: The counters of :attr:`NodeStatus.counters` that have a metric of their own
#: (``standby_<name>_total``), and what each counts. Every counter, these
#: included, is also exported as ``standby_node_counter_total{counter=...}``.
_COUNTERS: Final[Mapping[str, tuple[str, str]]] = {
    "failovers": ("promotions", "Workloads this node took over as primary (promotions)."),
    "claims_won": (
        "election.claims_won",
        "Promotion claims that won their epoch here (the spawn went ahead).",
    ),
    "claims_lost": (
        "election.claims_lost",
        "Promotion claims given up to a peer's claim on the same epoch.",
    ),
    "workloads_cannot_start": (
        "workloads_cannot_start",
        "Workloads this standby gave up because every spawn it was allowed failed.",
    ),
    "relay_refusals": (
        "relay_refusals",
        "Relay answers that were errors (refused, down, timed out), per relay and call.",
    ),
    "inputs_dropped": (
        "dropped",
        "Messages or late results the node itself rejected (replays, wrong signer, ...).",
    ),
    "store_errors": ("store_errors", "Saves of the node's state that failed (retried)."),
    "stepped_down": (
        "stepped_down",
        "Primaries that fenced at once on a later epoch's claim or announcement.",
    ),
    "standbys_given_up": (
        "standbys_given_up",
        "Promotions given up after a restart: the workload has one standby fewer.",
    ),
    "event_log_errors": ("event_log_errors", "Event log lines that could not be written."),
}

#: Counters split by a label: metric name -> (label, counter prefix, help).
_LABELLED: Final[Mapping[str, tuple[str, str, str]]] = {
    "quorum_shortfalls": (
        "stage",
        "quorum_shortfall.",
        "Reads or claims that missed their quorum, by stage "
        "(confirm, preread, claim, reread, ...).",
    ),
    "transport_drops": (
        "reason",
        "transport_drops.",
        "Messages the transport dropped before the node saw them, by reason "
        "(bad_signature, unexpected_author, malformed).",
    ),
}

#: Spawn failures: role -> the node counter (an ``OperationFailed`` of that operation).
_SPAWN_FAILURES: Final[Mapping[str, str]] = {"standby": "spawn_errors", "primary": "start_errors"}

#: Every metric name a scrape can show (counters with their ``_total`` suffix).
METRICS: Final[tuple[str, ...]] = (
    "leader_election_master_status",
    "standby_workload_role",
    "standby_workload_epoch",
    "standby_lease_remaining_seconds",
    "standby_primary_last_heartbeat_timestamp_seconds",
    "standby_slots",
    *(f"standby_{name}_total" for name in _COUNTERS),
    *(f"standby_{name}_total" for name in _LABELLED),
    "standby_spawn_failures_total",
    "standby_node_counter_total",
)


class NodeCollector(Collector):
    """A Prometheus collector over one or more nodes (anything with ``status()``).

    Register it on the host's own registry (``registry.register(collector)``);
    it never touches prometheus_client's default registry. Give each node
    once: two nodes with the same identity would give duplicate series.
    """

    def __init__(self, *nodes: StatusSource) -> None:
        self.nodes = nodes

    def __repr__(self) -> str:
        return f"NodeCollector({len(self.nodes)} nodes)"

    def collect(self) -> Iterator[Metric]:
        """The metric families of one snapshot of every node."""
        statuses = [node.status() for node in self.nodes]
        yield from _workload_gauges(statuses)
        yield from _counters(statuses)


def _workload_gauges(statuses: list[NodeStatus]) -> Iterator[Metric]:
    master = GaugeMetricFamily(
        "leader_election_master_status",
        "1 while this node runs the workload as its primary, else 0 "
        "(named as client-go's leader election gauge; `name` is the workload).",
        labels=["name", "node"],
    )
    role = GaugeMetricFamily(
        "standby_workload_role",
        "1 for each workload this node holds, labelled with its role (primary or standby) "
        "and its state (lifecycle state or slot phase).",
        labels=["node", "workload", "role", "state"],
    )
    epoch = GaugeMetricFamily(
        "standby_workload_epoch",
        "The epoch of each workload as this node knows it.",
        labels=["node", "workload"],
    )
    lease = GaugeMetricFamily(
        "standby_lease_remaining_seconds",
        "Seconds until the lease of a workload this node runs as primary ends.",
        labels=["node", "workload"],
    )
    heartbeat = GaugeMetricFamily(
        "standby_primary_last_heartbeat_timestamp_seconds",
        "Timestamp (Unix seconds) of the newest heartbeat heard from each primary "
        "this node stands by for.",
        labels=["node", "primary"],
    )
    slots = GaugeMetricFamily(
        "standby_slots", "Standby slots this node holds, by phase.", labels=["node", "phase"]
    )
    for status in statuses:
        node = status.identity
        running = set()
        for primary in status.primaries:
            workload = primary.workload_id
            live = primary.state in RUNNING
            if live and primary.running:
                running.add(workload)
            role.add_metric([node, workload, "primary", primary.state.value], 1)
            epoch.add_metric([node, workload], primary.epoch)
            if live and primary.lease_end is not None:
                lease.add_metric([node, workload], primary.lease_end - status.at)
        phases: dict[str, int] = {}
        for slot in status.slots:
            workload = slot.workload_id
            role.add_metric([node, workload, "standby", slot.phase.value], 1)
            epoch.add_metric([node, workload], slot.epoch)
            phases[slot.phase.value] = phases.get(slot.phase.value, 0) + 1
        for phase, count in sorted(phases.items()):
            slots.add_metric([node, phase], count)
        known = {p.workload_id for p in status.primaries} | {s.workload_id for s in status.slots}
        for workload in sorted(known):
            master.add_metric([workload, node], 1 if workload in running else 0)
        for primary_id, at in sorted(status.heartbeats.items()):
            heartbeat.add_metric([node, primary_id], at)
    yield from (master, role, epoch, lease, heartbeat, slots)


def _counters(statuses: list[NodeStatus]) -> Iterator[Metric]:
    named = {
        name: CounterMetricFamily(f"standby_{name}", text, labels=["node"])
        for name, (_, text) in _COUNTERS.items()
    }
    labelled = {
        name: CounterMetricFamily(f"standby_{name}", text, labels=["node", label])
        for name, (label, _, text) in _LABELLED.items()
    }
    spawns = CounterMetricFamily(
        "standby_spawn_failures",
        "Container starts that failed: role=standby for a promotion's spawn, "
        "role=primary for a first start.",
        labels=["node", "role"],
    )
    every = CounterMetricFamily(
        "standby_node_counter",
        "Every counter of the node's status(), by its name (see docs/node.md).",
        labels=["node", "counter"],
    )
    for status in statuses:
        node, counters = status.identity, status.counters
        for name, (counter, _) in _COUNTERS.items():
            named[name].add_metric([node], counters.get(counter, 0))
        for name, (_, prefix, _) in _LABELLED.items():
            for counter, value in sorted(counters.items()):
                if counter.startswith(prefix):
                    labelled[name].add_metric([node, counter[len(prefix) :]], value)
        for role, counter in _SPAWN_FAILURES.items():
            spawns.add_metric([node, role], counters.get(counter, 0))
        for counter, value in sorted(counters.items()):
            every.add_metric([node, counter], value)
    yield from named.values()
    yield from labelled.values()
    yield spawns
    yield every
