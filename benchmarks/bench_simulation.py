"""Simulator throughput: one-hour virtual scenarios per second on one core.

Each scenario is the reference failover: default timing, 3 relays, 2
standbys, the primary crashes at t=1200 s, simulated until t=3600 s (one
virtual hour, one failover, a heartbeat a minute, storage writes). Every
scenario has its own seed. The simulator runs three real ``StandbyNode``s
on the virtual-time loop (the machine-level simulator it replaced ran 329
scenarios per second on the reference machine). Goal: at least 50 per second
on one core.

The rate is scenarios per second of this process's CPU time (what one core
gives it, however loaded the machine is); the wall-clock rate and the load
average are printed beside it.

    python benchmarks/bench_simulation.py [--scenarios N] [--repeat R] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import time

from standby import Timing
from standby.testing import Simulation

HORIZON = 3600.0
CRASH_AT = 1200.0
GOAL = 50.0


def scenario(seed: int) -> int:
    """Run one scenario; returns the number of promotions (to keep the work observable)."""
    sim = Simulation(timing=Timing(), relays=3, standbys=2, seed=seed)
    sim.crash(CRASH_AT)
    report = sim.run(until=HORIZON)
    sim.close()
    if not report.ok:
        raise SystemExit(f"seed {seed}: unexpected violation\n{report.format()}")
    return len(report.promotions)


def measure(count: int, first_seed: int) -> tuple[float, float]:
    """Scenarios per CPU second and per wall-clock second over ``count`` scenarios."""
    cpu, wall = time.process_time(), time.perf_counter()
    promotions = 0
    for seed in range(first_seed, first_seed + count):
        promotions += scenario(seed)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    if promotions != count:
        raise SystemExit(f"expected one promotion per scenario, got {promotions} in {count}")
    return count / cpu, count / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", type=int, default=100, help="scenarios per measurement")
    parser.add_argument("--repeat", type=int, default=3, help="measurements (best is reported)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one batch")
    args = parser.parse_args()

    measure(20, first_seed=10_000)  # warm up
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        measure(args.scenarios, first_seed=0)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        return
    rates = [measure(args.scenarios, first_seed=i * args.scenarios) for i in range(args.repeat)]
    best, wall = max(rates)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"{best:.1f} scenarios/s on one core (best of {args.repeat} x {args.scenarios}; "
        f"all: {', '.join(f'{r:.1f}' for r, _ in rates)}; wall clock {wall:.1f}/s) -- "
        f"one virtual hour each, {1 / best * 1e3:.2f} ms of CPU per scenario; "
        f"goal >= {GOAL:.0f}/s: {'met' if best >= GOAL else 'MISSED'}; load average {load}"
    )


if __name__ == "__main__":
    main()
