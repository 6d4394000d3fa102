"""How each fault of :mod:`~standby.testing.simulation._faults` is carried out in the world.

Network faults become the memory network's own faults (partitions, link
loss, delay and duplication, relays that forget); process faults act on the
node incarnations through the virtual loop (freeze, thaw, kill after any
step); host faults act on the host's runtime (a host crash ends its
containers) and store (a new incarnation reads what was made durable).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs

from ...core._models import (
    Heartbeat,
    LeaseRevocation,
    Message,
    PromotionAnnouncement,
    PromotionClaim,
    fencing_token,
)
from ._faults import (
    CURRENT_PRIMARY,
    Crash,
    Delay,
    Drop,
    Duplicate,
    FailSpawn,
    Fault,
    Forge,
    Handover,
    Heal,
    Kill,
    Partition,
    Pause,
    RelayAmnesia,
    Replay,
    Restart,
    SkewClock,
    SlowSpawn,
    StepClock,
)
from ._loop import Process
from ._report import BASE_TIME

if TYPE_CHECKING:
    from ._checkers import Disruption
    from ._simulation import Simulation
    from ._world import Host

__all__ = ["Injector"]

_INF = math.inf


class _Rule:
    __slots__ = ("kind", "param", "who")

    def __init__(self, kind: str, who: str | None, param: float) -> None:
        self.kind = kind
        self.who = who
        self.param = param


class Injector:
    """Validates faults and carries them out at their time."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self._base = (0.0, 0.0)
        self._rules: list[_Rule] = []
        self._cuts: set[tuple[str, str]] = set()
        self._open: list[tuple[Disruption, frozenset[tuple[str, str]]]] = []
        self._kill_host: dict[str, bool] = {}

    # -- set-up -------------------------------------------------------------

    def set_base_latency(self, network: tuple[float, float]) -> None:
        self._base = network
        self._links()

    def validate(self, fault: Fault) -> None:
        sim = self.sim
        names = set(sim.providers)

        def provider(who: str | None, *, wildcard: bool = False) -> None:
            if who is None or who == CURRENT_PRIMARY or (wildcard and who == "*"):
                return
            if who not in names:
                raise ValueError(f"{fault!r}: unknown provider {who!r}; known: {sorted(names)}")

        def relays(chosen: Sequence[str] | None) -> None:
            for name in chosen or ():
                if name not in sim.relays:
                    raise ValueError(
                        f"{fault!r}: unknown relay {name!r}; known: {sorted(sim.relays)}"
                    )

        if isinstance(fault, (Partition, Heal)):
            provider(fault.who, wildcard=True)
            relays(fault.relays)
        elif isinstance(fault, RelayAmnesia):
            relays((fault.relay,))
        elif isinstance(fault, Forge):
            if fault.kind in ("claim", "announcement") and fault.signer in names:
                raise ValueError(
                    f"{fault!r}: a {fault.kind} signed by a participant is genuine, not forged; "
                    "use a signer that is not a provider of the simulation"
                )
        else:
            provider(fault.who)

    # -- dispatch -------------------------------------------------------------

    def apply(self, fault: Fault) -> None:
        sim = self.sim
        sim.record_line("FAULT", repr(fault))
        if not isinstance(fault, (Crash, Kill, Restart, Pause, Partition, Handover)):
            self._mark_other(fault)
        if isinstance(fault, Crash):
            self._kill(fault.who, host_too=True, steps=None)
        elif isinstance(fault, Kill):
            self._kill(fault.who, host_too=fault.host, steps=fault.steps)
        elif isinstance(fault, Restart):
            self._restart(fault)
        elif isinstance(fault, Pause):
            self._pause(fault)
        elif isinstance(fault, Partition):
            self._partition(fault)
        elif isinstance(fault, Heal):
            self._heal(fault.who, fault.relays)
        elif isinstance(fault, (SkewClock, StepClock)):
            self._clock(fault)
        elif isinstance(fault, (Drop, Delay, Duplicate)):
            self._link_rule(fault)
        elif isinstance(fault, Replay):
            self._replay(fault)
        elif isinstance(fault, Forge):
            self._forge(fault)
        elif isinstance(fault, SlowSpawn):
            host = sim.host(fault.who)
            for _ in range(fault.count):
                host.slow.append((fault.extra, sim.disrupt("slow spawn", _INF, (host.name,))))
        elif isinstance(fault, FailSpawn):
            host = sim.host(fault.who)
            for _ in range(fault.count):
                host.failing.append(sim.disrupt("failing spawn", _INF, (host.name,)))
        elif isinstance(fault, RelayAmnesia):
            self._amnesia(fault)
        elif isinstance(fault, Handover):
            self._handover(fault)

    def _mark_other(self, fault: Fault) -> None:
        """Record a fault without a picture of its own: its span and its provider, if any."""
        sim = self.sim
        who = getattr(fault, "who", None)
        host = None if who is None or who == "*" else self._resolve(who)
        duration = getattr(fault, "duration", None)
        end = sim.now if duration is None else sim.now + duration
        names = () if host is None else (host.name,)
        sim.faults_seen.mark(
            type(fault).__name__.lower(), names, sim.now, end=end, detail=repr(fault)
        )

    def _resolve(self, who: str) -> Host | None:
        sim = self.sim
        if who == CURRENT_PRIMARY:
            return sim.primary_host()
        return sim.host(who)

    # -- processes and hosts --------------------------------------------------

    def _kill(self, who: str, *, host_too: bool, steps: int | None) -> None:
        sim = self.sim
        host = self._resolve(who)
        if host is None or not host.alive:
            sim.record_line("FAULT", "  (nobody to kill)")
            return
        inc = host.incarnation
        assert inc is not None
        process = inc.process
        self._kill_host[process.name] = host_too
        if steps is None:
            sim.loop.kill(process)
        else:
            process.kill_at_step = process.steps + steps

    def killed(self, host: Host, process: Process) -> None:
        """Called by the loop at the instant ``process`` dies (see ``Host.start``)."""
        sim = self.sim
        host_too = self._kill_host.pop(process.name, True)
        what = "host crash" if host_too else "process killed"
        self._expect_failover(host)
        sim.checks.node_state(sim.now, host.name, up=False)
        sim.record_line(
            host.name,
            ("%s: node process %s is gone after %d steps", (what, process.name, process.steps)),
        )
        if host_too:
            for runtime in host.runtimes:
                crash = getattr(runtime, "crash", None)
                if crash is not None:
                    crash()
            self._end_freeze(host)
        sim.disrupt(f"crash of {host.name}", targets=(host.name,))
        sim.faults_seen.mark("crash" if host_too else "kill", (host.name,), sim.now)

    def _restart(self, fault: Restart) -> None:
        sim = self.sim
        host = sim.host(fault.who)
        if host.alive:
            self._kill_host[host.incarnation.process.name] = True  # type: ignore[union-attr]
            sim.loop.kill(host.incarnation.process)  # type: ignore[union-attr]
        sim.disrupt(f"restart of {host.name}", targets=(host.name,))
        sim.faults_seen.mark("restart", (host.name,), sim.now)
        request = None
        if fault.reaccept == "with-created-at":
            request = sim.request
        elif fault.reaccept == "without-created-at":
            request = attrs.evolve(sim.request, created_at=None)
        sim.start(host, request)

    def _pause(self, fault: Pause) -> None:
        sim = self.sim
        host = self._resolve(fault.who)
        process = None if host is None else host.process
        if host is None or process is None or not process.alive or process.frozen:
            sim.record_line("FAULT", "  (nobody to pause)")
            return
        now = sim.now
        sim.loop.freeze(process, hold_clock=fault.workload == "frozen")
        if fault.workload == "frozen":
            host.freezes.append((now, None))
        pause = sim.disrupt("pause", now + fault.duration, (host.name,))
        sim.faults_seen.mark("freeze", (host.name,), now, disruption=pause, detail=fault.workload)
        sim.loop.call_at(now + fault.duration, self._thaw, host, process)

    def _thaw(self, host: Host, process: Process) -> None:
        sim = self.sim
        self._end_freeze(host)
        if process.alive:
            sim.record_line(host.name, ("node process %s thawed", (process.name,)))
            sim.loop.thaw(process)

    def _end_freeze(self, host: Host) -> None:
        if host.freezes and host.freezes[-1][1] is None:
            host.freezes[-1] = (host.freezes[-1][0], self.sim.now)

    def _expect_failover(self, crashed: Host) -> None:
        """At a primary's death: a standby must take over within the liveness bound."""
        sim = self.sim
        wid = sim.workload_id
        if crashed.incarnation is None:
            return
        node = crashed.incarnation.node  # its process is dying: read it one last time
        status = node.status().primary(wid)
        if status is None or not status.running or status.state.value not in ("live", "suspect"):
            return
        running = sim.running()
        if len(running) != 1 or running[0][0] != crashed.name:
            return
        candidates: list[tuple[int, str]] = []
        for host in sim.hosts():
            other = host.node
            process = host.process
            if host is crashed or other is None or process is None or process.frozen:
                continue
            slot = other.election.slots.get(wid)
            if slot is not None and slot.primary == crashed.name:
                candidates.append((slot.standby_index, host.name))
        if not candidates:
            return
        index, candidate = min(candidates)
        timing = sim.timing
        anchor = max(sim.checks.hb_stored.get(crashed.name, -_INF), crashed.promoted_at)
        slack = timing.max_clock_skew + 5 * timing.query_timeout + 2 * sim.latencies.network[1]
        bound = (
            anchor
            + timing.silence
            + index * timing.promotion_delay
            + timing.claim_settle
            + sim.latencies.spawn[1]
            + slack
        )
        sim.checks.expect_failover(crashed.name, sim.now, anchor, index, candidate, bound)

    def _handover(self, fault: Handover) -> None:
        sim = self.sim
        sim.disrupt("handover")
        host = self._resolve(fault.who)
        node = None if host is None else host.node
        if host is None or node is None or host.incarnation is None:
            sim.record_line("FAULT", "  (nobody to hand over)")
            return
        sim.faults_seen.mark("handover", (host.name,), sim.now)

        async def hand_over() -> None:
            try:
                await node.handover(sim.workload_id)
            except Exception as exc:
                sim.record_line(host.name, f"handover refused: {type(exc).__name__}: {exc}")

        # A task copies the context it is created in: the node's process.
        host.incarnation.context.copy().run(sim.loop.create_task, hand_over())

    # -- network ------------------------------------------------------------

    def _targets(self, who: str | None) -> list[str]:
        if who is None or who == "*":
            return list(self.sim.providers)
        host = self._resolve(who)
        return [] if host is None else [host.name]

    def _partition(self, fault: Partition) -> None:
        sim = self.sim
        names = self._targets(fault.who)
        relays = list(sim.relays) if fault.relays is None else list(fault.relays)
        links = frozenset((n, r) for n in names for r in relays)
        for name, relay in links:
            if (name, relay) not in self._cuts:
                self._cuts.add((name, relay))
                sim.network.partition(name, [relay])
        end = _INF if fault.duration is None else sim.now + fault.duration
        disruption = sim.disrupt("partition", end, names, even=fault.who == "*")
        detail = "every relay" if fault.relays is None else ", ".join(relays)
        sim.faults_seen.mark("partition", names, sim.now, disruption=disruption, detail=detail)
        if fault.duration is None:
            self._open.append((disruption, links))
        else:
            sim.loop.call_at(end, self._heal_links, links)

    def _heal_links(self, links: frozenset[tuple[str, str]]) -> None:
        self.sim.record_line("FAULT", ("partition of %d links healed", (len(links),)))
        for name, relay in links:
            if (name, relay) in self._cuts:
                self._cuts.discard((name, relay))
                self.sim.network.heal(name, [relay])

    def _heal(self, who: str | None, relays: Sequence[str] | None) -> None:
        sim = self.sim
        names = self._targets(who)
        chosen = list(sim.relays) if relays is None else list(relays)
        links = frozenset((n, r) for n in names for r in chosen)
        self._heal_links(links)
        still = []
        for disruption, cut in self._open:
            if cut <= links:
                disruption.end = sim.now
            else:
                still.append((disruption, cut))
        self._open = still

    def _link_rule(self, fault: Drop | Delay | Duplicate) -> None:
        sim = self.sim
        if isinstance(fault, Delay):
            rule = _Rule("delay", fault.who, fault.extra)
        else:
            rule = _Rule(type(fault).__name__.lower(), fault.who, fault.probability)
        self._rules.append(rule)
        self._links()
        end = sim.now + fault.duration
        sim.loop.call_at(end, self._end_rule, rule)
        sim.disrupt(type(fault).__name__.lower(), end, None if fault.who is None else (fault.who,))

    def _end_rule(self, rule: _Rule) -> None:
        self._rules.remove(rule)
        self._links()

    def _links(self) -> None:
        lo, hi = self._base
        network = self.sim.network
        network.clear_faults()
        network.set_faults(latency=lo, jitter=hi - lo)
        if not self._rules:
            return
        everyone = any(rule.who is None for rule in self._rules)
        touched = {rule.who for rule in self._rules}
        for name in self.sim.providers:
            if not everyone and name not in touched:
                continue
            drop = duplicate = 0.0
            jitter = hi - lo
            for rule in self._rules:
                if rule.who is not None and rule.who != name:
                    continue
                if rule.kind == "drop":
                    drop = 1 - (1 - drop) * (1 - rule.param)
                elif rule.kind == "delay":
                    jitter += rule.param
                else:
                    duplicate = 1 - (1 - duplicate) * (1 - rule.param)
            network.set_faults(
                provider=name, latency=lo, jitter=jitter, drop=drop, duplicate=duplicate
            )

    def _clock(self, fault: SkewClock | StepClock) -> None:
        """Set (or step) a host's wall clock; note a spread beyond the bound."""
        sim = self.sim
        host = self._resolve(fault.who)
        if host is None:
            sim.record_line("FAULT", "  (no primary: no clock to set)")
            return
        if isinstance(fault, SkewClock):
            host.skew = float(fault.offset)
        else:
            host.skew += float(fault.delta)
        bound = sim.timing.max_clock_skew
        notes = []
        if isinstance(fault, StepClock) and abs(fault.delta) > bound:
            notes.append(
                f"{host.name}'s clock stepped {fault.delta:+g} s > max_clock_skew={bound:g} s "
                f"at t={sim.now:.3f}"
            )
        skews = [h.skew for h in sim.hosts()]
        spread = max(skews) - min(skews)
        if spread > bound:
            notes.append(
                f"clocks differ by {spread:g} s > max_clock_skew={bound:g} s from t={sim.now:.3f}"
            )
        for note in notes:
            sim.note(note)
        if notes:
            sim.disrupt("clock skew beyond the bound", _INF)

    def _amnesia(self, fault: RelayAmnesia) -> None:
        sim = self.sim
        relay = sim.network.relay(fault.relay)
        relay.forget()
        note = f"{fault.relay} lost its stored events at t={sim.now:.3f}"
        if fault.duration is not None:
            relay.amnesiac = True
            sim.loop.call_at(sim.now + fault.duration, setattr, relay, "amnesiac", False)
            note += f" and every event acknowledged in the next {fault.duration:g} s"
        sim.note(note)
        sim.disrupt("relay amnesia", _INF)

    def _replay(self, fault: Replay) -> None:
        sim = self.sim
        published = sim.published()
        sim.disrupt("replay")
        if not published:
            return
        rng = sim.rng
        for _ in range(fault.count):
            message, signer = published[rng.randrange(len(published))]
            relay = sim.relays[rng.randrange(len(sim.relays))]
            sim.network.replay(message, signer=signer, relays=[relay], to=fault.who)

    def _forge(self, fault: Forge) -> None:
        sim = self.sim
        wid = sim.workload_id
        now = BASE_TIME + sim.now
        holder = sim.observer.holder
        epoch = sim.observer.epoch
        if fault.signer == holder and fault.kind in ("revocation", "heartbeat"):
            sim.record_line("FAULT", "  (the signer is the primary itself: nothing forged)")
            return
        standbys = sim.topology.standbys
        message: Message
        if fault.kind == "revocation":
            message = LeaseRevocation(
                workload_id=wid,
                primary=holder,
                standbys=standbys,
                reason="forged",
                revoked_at=now,
                epoch=epoch,
            )
        elif fault.kind == "claim":
            message = PromotionClaim(
                workload_id=wid,
                epoch=epoch + 1,
                fencing_token=fencing_token(epoch + 1, 0),
                claimant=standbys[0] if standbys else holder,
                standby_index=0,
                claimed_at=now,
            )
        elif fault.kind == "announcement":
            message = PromotionAnnouncement(
                workload_id=wid,
                new_primary=standbys[0] if standbys else holder,
                promoted_at=now,
                epoch=epoch + 1,
                fencing_token=fencing_token(epoch + 1, 0),
            )
        else:
            message = Heartbeat(provider=holder, timestamp=now)
        sim.network.replay(message, signer=fault.signer)
