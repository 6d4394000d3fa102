"""Fingerprints of simulated runs, to show a speed-up changed nothing the simulator does.

For each scenario (the benchmark's reference failover, random fault schedules,
and one family per campaign focus, ``--count`` seeds each) it hashes the
run's timeline (every event, in order), its violations and its accepted
storage writes (the *events* digest), and apart from that the steps each
simulated process took (the *steps* digest, which a change that saves
scheduler turns may legitimately move). Save the fingerprints before a
change and compare after it:

    python benchmarks/simulation_fingerprints.py --save before.json
    python benchmarks/simulation_fingerprints.py --compare before.json

``--compare`` exits 1 when an events digest differs, and lists the scenarios
whose step counts moved.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
from pathlib import Path

from standby import Timing
from standby.testing import Simulation
from standby.testing.simulation._campaign import FOCUSES, random_faults

HORIZON = 3600.0
FAMILIES = ("bench", "random", *FOCUSES)


def simulation(family: str, seed: int) -> Simulation:
    """The simulation of one scenario of ``family`` (see the module docstring)."""
    timing = Timing()
    if family == "bench":
        return Simulation(timing=timing, standbys=2, seed=seed).crash(1200.0)
    focus = None if family == "random" else family
    faults = random_faults(
        random.Random(seed), timing=timing, standbys=2, horizon=HORIZON, focus=focus
    )
    return Simulation(
        timing=timing, standbys=2, seed=seed, faults=faults, atomic_claims=seed % 3 == 0
    )


def fingerprint(family: str, seed: int) -> tuple[str, str]:
    """``(events digest, steps digest)`` of one scenario."""
    sim = simulation(family, seed)
    report = sim.run(until=HORIZON)
    events = hashlib.sha256()
    for line in report.timeline:
        events.update(line.encode() + b"\n")
    events.update(repr([(v.kind, v.at) for v in report.violations]).encode())
    events.update(repr(report.storage_writes_accepted).encode())
    steps = repr(sorted((p.name, p.steps) for p in sim._processes))
    sim.close()
    return events.hexdigest()[:16], hashlib.sha256(steps.encode()).hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=25, help="seeds per family")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--save", type=Path, help="write the fingerprints to this file")
    action.add_argument("--compare", type=Path, help="compare with fingerprints saved earlier")
    args = parser.parse_args()
    found = {
        f"{family}:{seed}": fingerprint(family, seed)
        for family in FAMILIES
        for seed in range(args.count)
    }
    if args.save is not None:
        args.save.write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")
        print(f"{len(found)} fingerprints saved to {args.save}")
        return
    saved = {key: tuple(value) for key, value in json.loads(args.compare.read_text()).items()}
    common = sorted(saved.keys() & found.keys())
    events = [key for key in common if saved[key][0] != found[key][0]]
    steps = [key for key in common if saved[key][1] != found[key][1]]
    print(
        f"{len(common)} scenarios compared: {len(events)} with other events"
        f"{' (' + ', '.join(events) + ')' if events else ''}, {len(steps)} with other step counts"
        f"{' (' + ', '.join(steps) + ')' if steps else ''}"
    )
    sys.exit(1 if events else 0)


if __name__ == "__main__":
    main()
