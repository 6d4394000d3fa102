"""The simulator runs the shipped node: crashes at any step, freezes, surviving containers.

Each failure mode of ``SAFETY.md`` that lives in the node (14 to 17, 21) has
a scenario here that the simulator reported as a violation on the node before
it was made crash-safe (the seeds and texts are in the closing note of the
simulator's issue), and that it must find clean now. The deliberately broken
adapters (a runtime without lease enforcement, a store that acknowledges
before it is durable) show the checkers still catch those failure modes.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools

import pytest

from standby import Timing
from standby.testing import Simulation, SimulationReport
from standby.testing.simulation._loop import CURRENT_PROCESS, Process, VirtualLoop
from standby.testing.simulation._simulation import memory_runtime
from standby.testing.simulation._world import SimulatedStore

NO_LEASES = functools.partial(memory_runtime, enforce_leases=False)


def early_store(_host: str) -> SimulatedStore:
    return SimulatedStore(acknowledge_early=True)


# ----------------------------------------------------------------------
# Failure mode 14: the fence outlives the node
# ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fm14_killed_primary_leaves_no_container_past_its_lease(seed: int) -> None:
    report = Simulation(seed=seed).kill(600, "primary").run(until=2400)
    assert report.ok, report.format()
    assert [p.provider for p in report.promotions] == ["standby-0"]
    gone = next(line for line in report.timeline.lines() if "container gone (token 0)" in line)
    assert "lease end" in gone  # the supervisor, not the dead node, stopped it
    assert float(gone.split()[0]) < report.promotions[0].at


def test_fm14_a_runtime_without_lease_enforcement_is_reported() -> None:
    report = Simulation(seed=0, runtime_factory=NO_LEASES).kill(600, "primary").run(until=2400)
    (violation,) = report.violations_of("two-live")
    assert "primary (epoch 0, token 0" in violation.explanation
    assert "standby-0 (epoch 1, token 1048576" in violation.explanation
    assert "still running at the end of the run" in violation.explanation


def test_fm14_a_node_frozen_while_its_workload_runs_is_bounded_by_the_lease() -> None:
    def frozen(runtime_factory: object = None) -> SimulationReport:
        sim = Simulation(seed=1, runtime_factory=runtime_factory)  # type: ignore[arg-type]
        return sim.pause(600, "primary", duration=400, workload="running").run(until=2400)

    assert frozen().ok
    assert frozen(NO_LEASES).violations_of("two-live")


# ----------------------------------------------------------------------
# Failure mode 15: durable intent before the spawn
# ----------------------------------------------------------------------


def spawn_then_die(store: object = None, *, steps: int = 17) -> SimulationReport:
    """standby-0 is killed with its host ``steps`` loop steps into its promotion."""
    sim = Simulation(seed=0, store_factory=store)  # type: ignore[arg-type]
    # The kill counts its steps from just before standby-0's container runs
    # in an undisturbed run (when that is depends on the node's code).
    sim.crash(1200, "primary").kill(_spawned_at() - 2.0, "standby-0", steps=steps, host=True)
    return sim.restart(_spawned_at() + 10.0, "standby-0").run(until=2400)


@functools.cache
def _spawned_at() -> float:
    report = Simulation(seed=0).crash(1200, "primary").run(until=1500)
    (promotion,) = report.promotions
    return promotion.at


def test_fm15_a_standby_killed_between_spawn_and_save_never_reuses_its_token() -> None:
    for steps in (1, 5, 12, 15, 17, 18, 25):
        report = spawn_then_die(steps=steps)
        assert not report.violations_of("token-shared"), report.format()
        assert not report.violations_of("two-live"), report.format()


def test_fm15_a_store_that_acknowledges_before_it_is_durable_is_reported() -> None:
    # Some kill point between the spawn and the durable save shows it (which
    # step that is depends on the node's code, so look for it).
    found = []
    for steps in range(1, 40):
        report = spawn_then_die(early_store, steps=steps)
        found = report.violations_of("token-shared")
        if found:
            break
    (violation,) = found
    assert "fencing token 1048576 was handed to two incarnations" in violation.explanation
    assert "standby-0#1" in violation.explanation
    assert "standby-0#2" in violation.explanation


def test_fm15_a_promotion_adopted_after_a_restart_keeps_its_token_spent() -> None:
    # standby-0 promotes, is killed and restarted (it adopts its container),
    # then its host dies and it restarts again with standby-1 gone. Before the
    # fix the adoption dropped the spent marker, so the third incarnation
    # stood by afresh and claimed epoch 1 with the same token again.
    sim = Simulation(seed=0).crash(600, "primary").kill(900, "standby-0")
    sim.restart(910, "standby-0", reaccept="with-created-at").crash(1400, "standby-1")
    report = sim.restart(1500, "standby-0", reaccept="with-created-at").run(until=3600)
    # Nobody is left to take over (standby-1's host is gone), and nothing is unsafe.
    assert report.ok, report.format()
    assert [(p.provider, p.epoch) for p in report.promotions] == [("standby-0", 1)]
    assert any("no longer stands by" in line for line in report.timeline.lines())


# ----------------------------------------------------------------------
# Failure mode 33: a standby that gave a promotion up says so
# ----------------------------------------------------------------------


def test_fm33_a_standby_restarted_mid_promotion_gives_up_once_and_says_so() -> None:
    # standby-0's host dies in the middle of its promotion (the spawn went
    # out, the container died with the host); then its node is killed and
    # restarted ten more times, the host re-sending the request each time.
    # Before the fix it gave the promotion up without a word: only each
    # re-accept was refused, so nothing told the host that the workload had
    # lost a standby.
    at = _spawned_at()
    sim = Simulation(seed=0).crash(1200, "primary")
    sim.kill(at - 2.0, "standby-0", steps=17, host=True)
    when = at + 10.0
    for _ in range(10):
        sim.restart(when, "standby-0", reaccept="with-created-at").kill(when + 5.0, "standby-0")
        when += 20.0
    report = sim.restart(when, "standby-0", reaccept="with-created-at").run(until=3600)
    assert report.ok, report.format()
    # Its epoch was revoked; standby-1 takes over into the next one.
    assert [(p.provider, p.epoch) for p in report.promotions] == [("standby-1", 2)]
    lines = report.timeline.lines()
    gave_up = [line for line in lines if "standby-0   no longer stands by:" in line]
    assert len(gave_up) == 1, gave_up
    assert "epoch 1 (token 1048576)" in gave_up[0]
    refused = [line for line in lines if "request refused" in line]
    assert len(refused) == 11
    assert all("reserve another standby" in line for line in refused)


def test_a_save_in_flight_when_the_process_dies_is_lost() -> None:
    store = SimulatedStore()
    sim = Simulation(
        seed=0, store_factory=lambda _host: store if _host == "standby-0" else SimulatedStore()
    )
    sim.run(until=0.001)  # standby-0's first save (its slot) is in flight
    assert store.state is None
    sim.kill(0.001, "standby-0")
    sim.run(until=10)
    assert store.state is None
    assert store.saves == 0


# ----------------------------------------------------------------------
# Failure mode 16: restart with the container still running
# ----------------------------------------------------------------------


@pytest.mark.parametrize("reaccept", ["without-created-at", "with-created-at", None])
def test_fm16_a_restarted_primary_adopts_its_running_container(reaccept: object) -> None:
    sim = Simulation(seed=0).kill(600, "primary").restart(620, "primary", reaccept=reaccept)
    report = sim.run(until=2400)
    assert report.ok, report.format()
    assert report.promotions == ()
    assert sim.running() == [("primary", 0)]


# ----------------------------------------------------------------------
# Failure mode 17: a primary frozen past its lease fences first on waking
# ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fm17_a_primary_thawed_past_its_lease_fences_before_it_heartbeats(seed: int) -> None:
    timing = Timing(relay_count=1, write_quorum=1)
    sim = Simulation(seed=seed, timing=timing).pause(600, "primary", duration=400)
    report = sim.run(until=2400)
    assert report.ok, report.format()
    assert [p.provider for p in report.promotions] == ["standby-0"]
    after = report.timeline.between(1000, 2400)
    assert not any("primary     heartbeat stamped" in line for line in after)


# ----------------------------------------------------------------------
# Failure mode 29: a fenced primary never restarts its revoked epoch
# ----------------------------------------------------------------------


def test_fm29_a_fenced_primary_never_restarts_its_revoked_epoch() -> None:
    # The primary is frozen past its lease, fences on waking and revokes
    # epoch 0; its record retires, and the host restarts it 2 s later and
    # re-sends the request. Before the fix the re-accept only asked whether a
    # later epoch was claimed (not yet: standby-1 was still backing off) and
    # started epoch 0 again with token 0, beside standby-1's epoch 1.
    sim = Simulation(seed=0).crash(100, "standby-0")
    sim.pause(600, "primary", duration=70, workload="running")
    report = sim.restart(676, "primary", reaccept="without-created-at").run(until=2400)
    assert report.ok, report.format()
    assert not report.violations_of("token-shared")
    assert [(p.provider, p.epoch) for p in report.promotions] == [("standby-1", 1)]
    starts = [line for line in report.timeline.lines() if "start container with token 0" in line]
    assert len(starts) == 1, starts


def test_fm29_a_primary_killed_between_its_fence_and_its_retirement_still_refuses() -> None:
    # Found by the fresh-seed CI campaign (seed 1503352113, shrunk): restarted,
    # the primary found its container gone and fenced the workload; 0.6 s
    # later, before the record retired, it was restarted again. The save in
    # between held no record of the run at all (an ended run was saved only
    # once retired), so the third incarnation started epoch 0 again with
    # token 0, the first incarnation's token.
    sim = Simulation(seed=1503352113)
    sim.partition(397.627, relays=["relay-1"], duration=420.627)
    sim.drop(564.885, 164.201, 0.942, who="standby-0")
    sim.delay(809.271, 81.6, 1.843, who="primary")
    sim.restart(870.808, "primary", reaccept="without-created-at")
    sim.restart(874.701, "primary", reaccept="without-created-at")
    report = sim.run(until=1080)
    assert report.ok, report.format()
    starts = [line for line in report.timeline.lines() if "start container with token 0" in line]
    assert len(starts) == 1, starts


# ----------------------------------------------------------------------
# Failure mode 25: a primary that sees a later epoch steps down at once
# ----------------------------------------------------------------------

#: The reference provider's timing: a lease (420 s) longer than the silence (180 s).
OUTSIDE_THE_MODEL = Timing.unsafe_unchecked(lease=420.0, suspect_after=120.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fm25_a_primary_that_sees_a_later_epoch_steps_down_at_once(seed: int) -> None:
    # Cut off for 250 s: a standby finds it silent and takes over, while the old
    # primary's 420 s lease still holds when the partition heals, so its
    # heartbeats renew it again. Only the later epoch it reads can stop it: the
    # announcement went out during the partition, so the subscription never
    # brings it, and the periodic read (~50 s after the heal here) must.
    timing = OUTSIDE_THE_MODEL
    heal = 850.0
    sim = Simulation(seed=seed, timing=timing).partition(600, "primary", duration=heal - 600)
    report = sim.run(until=2400)
    (promotion,) = report.promotions
    assert promotion.provider == "standby-0"
    assert promotion.at < heal
    (violation,) = report.violations_of("two-live")  # while it could not hear of it
    end = violation.at + report.double_live_seconds
    # Once it hears again: at most a heartbeat interval and a read (and the stop).
    bound = timing.heartbeat_interval + timing.query_timeout + sim.latencies.stop[1] + 1.0
    assert heal < end <= heal + bound, report.format()
    assert "still running at the end of the run" not in violation.explanation
    lines = report.timeline.lines()
    assert any(
        "primary     stepping down from epoch 0: standby-0 published a" in line for line in lines
    )
    reason = "fenced (standby-0 claimed or announced the later epoch 1)"
    assert any(reason in line for line in lines)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fm25_a_primary_thawed_after_a_takeover_stops_within_the_fence_grace(seed: int) -> None:
    # The failure mode as it was seen: a paused VM thaws after a standby took over,
    # with 170 s of its 420 s lease left. Held messages reach it as it thaws.
    sim = Simulation(seed=seed, timing=OUTSIDE_THE_MODEL)
    report = sim.pause(600, "primary", duration=250, workload="frozen").run(until=2400)
    assert report.ok, report.format()
    assert [p.provider for p in report.promotions] == ["standby-0"]
    assert report.double_live_seconds == 0
    stopped = next(
        line for line in report.timeline.lines() if "primary     stopped container" in line
    )
    assert float(stopped.split()[0]) - 850 <= OUTSIDE_THE_MODEL.fence_grace


# ----------------------------------------------------------------------
# Failure mode 21: every retry keeps the standby order
# ----------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "start", "length"), [(4, 720.35, 47.0), (4, 720.5, 38.0)])
def test_fm21_retries_after_a_relay_outage_keep_the_order(
    seed: int, start: float, length: float
) -> None:
    sim = Simulation(seed=seed).crash(600, "primary").partition(start, "*", duration=length)
    report = sim.run(until=2400)
    assert report.ok, report.format()
    assert [p.provider for p in report.promotions] == ["standby-0"]


@pytest.mark.parametrize("seed", [0, 7])
def test_fm21_standbys_leaving_a_deferral_keep_their_order(seed: int) -> None:
    # Standby 0 claims, its spawn times out, and it withdraws while standbys 1
    # and 2 are both deferring to it: they used to pre-read at once, together,
    # and standby 2 claimed first (seed 7) or even promoted (seed 0). Now the
    # next standby (1) goes at once, as guarantee 2 says a failed spawn lets
    # it, and standby 2 waits one promotion delay more.
    sim = Simulation(seed=seed, standbys=3).slow_spawn(0, "standby-0", 90).crash(600, "primary")
    report = sim.run(until=2400)
    assert report.ok, report.format()
    assert [(p.provider, p.epoch) for p in report.promotions] == [("standby-1", 1)]


def test_fm21_a_standby_whose_node_was_down_is_not_owed_its_turn() -> None:
    # Found by a fresh-seed campaign: standby-0's host crashed before the
    # primary's and came back just after standby-1 (index 1) had won the
    # compare-and-set. The order checker called it a broken order, though
    # standby-0 could not have claimed: its node was down.
    sim = Simulation(seed=367435763, timing=Timing.fast(), standbys=3, atomic_claims=True)
    sim.crash(9.967, "standby-0").crash(12.414, "primary").restart(15.564, "standby-0")
    report = sim.run(until=40)
    assert report.ok, report.format()
    assert [(p.provider, p.epoch) for p in report.promotions] == [("standby-1", 1)]


def test_fm21_a_standby_cut_off_from_a_relay_may_find_the_silence_first() -> None:
    # Found by a fresh-seed campaign (seed 291, shrunk): the killed primary's
    # last heartbeat reached relay-0 alone (no write quorum, so it renewed no
    # lease). standby-0 saw it and timed the silence from it; standby-1, cut
    # off from relay-0, did not, found the primary silent 60 s sooner and
    # claimed first. Not a broken order: standby-1 saw less, through a fault.
    sim = Simulation(seed=291).fail_spawn(3.33, "standby-1", count=3)
    sim.forge(281.879, "announcement", signer="mallory")
    sim.kill(529.588, steps=133)
    sim.partition(560.309, "standby-1", relays=["relay-0"], duration=372.519)
    report = sim.run(until=1080)
    assert report.ok, report.format()
    assert not report.violations_of("retry-order")


def test_fm14_a_lease_that_ran_out_with_nobody_asking_the_runtime_still_ended() -> None:
    # Found by the 100,000-schedule campaign (seed 1122307783, shrunk): the
    # killed standby-0's container reached its lease end at t=983 while no
    # node asked its runtime anything, and the report, made after the run,
    # read the lazily-reaped record on no clock at all: the container seemed
    # to run on beside standby-1's. The report now reaps at the virtual now.
    sim = Simulation(seed=1122307783).crash(36.318, "primary")
    sim.slow_spawn(175.644, "standby-1", 19.517, count=2)
    sim.restart(215.968, "primary").kill(781.658, steps=55)
    report = sim.run(until=1080)
    assert report.ok, report.format()
    (_first, second) = report.promotions
    (run,) = report.history.runs_of("standby-0")
    assert run.end is not None
    assert run.end < second.at


# ----------------------------------------------------------------------
# Failure mode 28: a compare-and-set holder that died blocked the epoch
# ----------------------------------------------------------------------


def test_fm28_a_compare_and_set_holder_that_died_is_followed_and_superseded() -> None:
    # standby-0 wins the compare-and-set of epoch 1, and its host dies 1 s
    # later, before it spawned or announced. standby-1 loses to that held
    # claim; once the claim is older than peer_claim_grace, it follows
    # standby-0 as the primary of epoch 1 and promotes itself at epoch 2
    # after standby-0's silence (it used to lose every round, for good).
    sim = Simulation(seed=0, atomic_claims=True).crash(600, "primary").crash(722, "standby-0")
    report = sim.run(until=3600)
    assert report.ok, report.format()
    assert [(p.provider, p.epoch) for p in report.promotions] == [("standby-1", 2)]
    assert any("follow standby-0 as primary of epoch 1" in line for line in report.timeline)


# ----------------------------------------------------------------------
# Failure mode 27: a fresh primary's silence baseline survives a restart
# ----------------------------------------------------------------------


def test_fm27_a_restarted_follower_times_the_silence_from_the_new_primarys_takeover() -> None:
    # standby-0 promotes at t=739 and its first heartbeat reaches no relay;
    # standby-1 follows it, is killed and restarted 20 s later. Timed from
    # its reservation, standby-0 looked silent at once and standby-1 promoted
    # over it (1,621 s of two live); timed from the takeover it waits for
    # standby-0's next heartbeat.
    sim = Simulation(seed=1).crash(600).drop(739.0, 0.3, 1.0, who="standby-0")
    report = sim.kill(760, "standby-1").restart(760.5, "standby-1").run(until=2400)
    assert report.ok, report.format()
    assert [p.provider for p in report.promotions] == ["standby-0"]
    assert report.promotions[0].at == pytest.approx(739.0, abs=1.0)


def test_fm27_a_follower_killed_before_it_saved_the_follow_finds_the_new_primary_again() -> None:
    # Killed a few ms after following standby-0, before the save: standby-1
    # comes back with its slot on the old primary, and re-learns the takeover
    # (and its time) from standby-0's announcement before it could claim. The
    # instant of the follow is read from the same run without the kill, so the
    # kill lands in the window whatever the steps before it cost.
    def scenario() -> Simulation:
        return Simulation(seed=1).crash(600).drop(739.0, 0.3, 1.0, who="standby-0")

    def follows(report: SimulationReport) -> list[float]:
        return [
            float(line.split()[0])
            for line in report.timeline.lines()
            if "standby-1" in line and "follow standby-0 as primary of epoch 1" in line
        ]

    (followed,) = follows(scenario().run(until=1000))
    kill, restart = followed + 0.003, followed + 0.5
    report = scenario().kill(kill, "standby-1").restart(restart, "standby-1").run(until=2400)
    assert report.ok, report.format()
    assert [p.provider for p in report.promotions] == ["standby-0"]
    seen = follows(report)
    assert len(seen) == 2
    assert seen[0] < kill < restart < seen[1]


# ----------------------------------------------------------------------
# Failure mode 30: a standby followed on its claim alone stays a standby
# ----------------------------------------------------------------------


def test_fm30_a_promoted_standby_keeps_the_standbys_that_watch_it() -> None:
    # standby-0 claims epoch 1 and freezes before it spawns; standby-1 follows
    # its claim, finds it silent and promotes into epoch 2; standby-0 thaws,
    # stands down and watches standby-1. standby-1 used to list no standbys,
    # ran its container unbounded by a lease, and when its node was killed the
    # container outlived it beside standby-0's (2,013 s of two live).
    sim = Simulation(seed=0).crash(600, "primary")
    sim.pause(725, "standby-0", duration=400, workload="running").kill(1400, "standby-1")
    report = sim.run(until=3600)
    assert report.ok, report.format()
    promotions = [(p.provider, p.epoch) for p in report.promotions]
    assert promotions == [("standby-1", 2), ("standby-0", 3)]
    # standby-1 ran under a lease (it knew standby-0 watched it): its
    # container stopped at the lease end, before standby-0 took over.
    (run,) = report.history.runs_of("standby-1")
    (bounded,) = [end for end in report.history.lease_ends() if end.run == run]
    assert bounded.expired
    assert run.end is not None
    assert run.end < report.promotions[1].at
    assert run.end - 1400 < report.timing.lease


def test_fm30_a_chain_of_frozen_claimants_all_stay_standbys() -> None:
    # Two claimants in a row freeze before they spawn; standby-2 takes over
    # epoch 3 and must list both, who thaw and watch it.
    sim = Simulation(seed=0, standbys=3).crash(600, "primary")
    sim.pause(725, "standby-0", duration=600, workload="running")
    sim.pause(1075, "standby-1", duration=600, workload="running").kill(2500, "standby-2")
    report = sim.run(until=5000)
    assert report.ok, report.format()
    promotions = [(p.provider, p.epoch) for p in report.promotions]
    assert promotions == [("standby-2", 3), ("standby-0", 4)]
    (run,) = report.history.runs_of("standby-2")
    assert run.end is not None
    assert run.end < report.promotions[1].at


# ----------------------------------------------------------------------
# The loop: freeze holds, kill drops, steps are counted
# ----------------------------------------------------------------------


def spawn_in(loop: VirtualLoop, process: Process, log: list[str]) -> None:
    async def tick() -> None:
        while True:
            await asyncio.sleep(10)
            log.append(f"{process.name}@{loop.time():g}")

    context = contextvars.copy_context()
    context.run(CURRENT_PROCESS.set, process)
    process.root = context.run(loop.create_task, tick())


def test_the_loop_holds_a_frozen_process_and_drops_a_killed_one() -> None:
    loop = VirtualLoop()
    a, b = Process("a"), Process("b")
    log: list[str] = []
    spawn_in(loop, a, log)
    spawn_in(loop, b, log)
    loop.advance_to(15)
    loop.freeze(a)
    loop.advance_to(35)
    loop.thaw(a)
    loop.advance_to(36)
    loop.kill(b)
    loop.advance_to(60)
    assert log == ["a@10", "b@10", "b@20", "b@30", "a@35", "a@45", "a@55"]
    assert loop.time() == 60
    assert b.root is not None
    assert b.root.cancelled()
    loop.close()


def test_a_held_clock_puts_timers_off_by_the_freeze() -> None:
    loop = VirtualLoop()
    a = Process("a")
    log: list[str] = []
    spawn_in(loop, a, log)
    loop.advance_to(15)
    loop.freeze(a, hold_clock=True)
    loop.advance_to(115)
    loop.thaw(a)
    loop.advance_to(130)
    assert log == ["a@10", "a@120"]  # 5 s were left when it froze: 5 s after the thaw
    loop.close()


def test_a_kill_lands_after_the_requested_step() -> None:
    loop = VirtualLoop()
    a = Process("a")
    log: list[str] = []
    spawn_in(loop, a, log)
    loop.advance_to(1)
    a.kill_at_step = a.steps + 3
    loop.advance_to(100)
    assert not a.alive
    assert len(log) <= 3
    loop.close()


def test_the_loop_runs_ties_in_scheduling_order_and_new_callbacks_next_iteration() -> None:
    loop = VirtualLoop()
    log: list[str] = []

    def note(what: str) -> None:
        log.append(f"{what}@{loop.time():g}")
        if what == "soon-1":
            loop.call_soon(note, "soon-from-soon-1")

    cancelled = loop.call_at(5, note, "cancelled")
    loop.call_at(5, note, "t5-first")
    loop.call_later(2, note, "t2")
    loop.call_at(5, note, "t5-second")
    cancelled.cancel()
    loop.call_soon(note, "soon-1")
    loop.call_soon(note, "soon-2")
    loop.advance_to(10)
    assert log == [
        "soon-1@0",
        "soon-2@0",
        "soon-from-soon-1@0",
        "t2@2",
        "t5-first@5",
        "t5-second@5",
    ]
    assert loop.time() == 10
    assert loop.next_timer() is None
    loop.close()


def test_the_loop_lets_cancelled_timers_go_wherever_they_pop() -> None:
    """Cancelled timers never run, at the front or due behind a live one, and none is left."""
    loop = VirtualLoop()
    log: list[tuple[float, int]] = []
    for instant in range(1, 101):
        handles = [loop.call_at(float(instant), log.append, (float(instant), k)) for k in range(6)]
        # Half a second before, the last five are cancelled (the first too, every
        # tenth instant): they pop due behind the first, or at the front.
        first = 0 if instant % 10 == 0 else 1
        loop.call_at(instant - 0.5, lambda hs=handles[first:]: [h.cancel() for h in hs])
    loop.advance_to(200)
    assert log == [(float(i), 0) for i in range(1, 101) if i % 10]
    assert loop.next_timer() is None
    assert loop._timer_cancelled_count == 0  # every cancelled timer let go, and counted so
    loop.close()


@pytest.mark.timeout(10)  # the loop used to spin there for ever
def test_the_loop_runs_timers_due_past_a_billion_seconds() -> None:
    """From about 1e9 s the clock's resolution is lost in its precision: timers still come due."""
    loop = VirtualLoop()
    log: list[tuple[float, float]] = []
    for when in (1e9, 1e9 + 0.5, 2e9, 2e9 + 1e-6, 2e9 + 1.0):
        loop.call_at(when, lambda when=when: log.append((when, loop.time())))
    loop.advance_to(2e9 + 10.0)
    assert log == [(when, when) for when in (1e9, 1e9 + 0.5, 2e9, 2e9 + 1e-6, 2e9 + 1.0)]
    assert loop.time() == 2e9 + 10.0
    loop.close()


def test_the_loops_get_debug_follows_set_debug() -> None:
    loop = VirtualLoop()
    assert loop.get_debug() is False
    loop.set_debug(True)
    assert loop.get_debug() is True
    loop.set_debug(False)
    assert loop.get_debug() is False
    loop.close()


def test_the_loop_reports_a_failing_callback_and_goes_on() -> None:
    loop = VirtualLoop()
    log: list[str] = []

    def boom() -> None:
        raise ValueError("boom")

    loop.call_at(1, boom)
    loop.call_at(2, log.append, "after")
    loop.advance_to(3)
    assert log == ["after"]
    assert len(loop.errors) == 1
    assert "ValueError: boom" in loop.errors[0]
    loop.close()


def test_callbacks_scheduled_threadsafe_belong_to_their_process() -> None:
    loop = VirtualLoop()
    a = Process("a")
    log: list[str] = []
    context = contextvars.copy_context()
    context.run(CURRENT_PROCESS.set, a)

    async def waits() -> None:
        future = loop.create_future()
        loop.call_soon_threadsafe(future.set_result, "done")
        log.append(await future)

    a.root = context.run(loop.create_task, waits())
    loop.freeze(a)
    loop.advance_to(5)
    assert log == []  # held with its process
    loop.thaw(a)
    loop.advance_to(6)
    assert log == ["done"]
    loop.close()
