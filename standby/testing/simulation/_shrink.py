"""Shrinking a failing schedule to the fewest faults and the shortest run that still fail.

:func:`shrink` reruns the deterministic simulation with one fault left out
at a time (keeping each removal that still fails), then bisects the run's
length, and repeats until neither helps: the result fails, and leaving out
any single one of its faults makes it pass.
"""

from __future__ import annotations

import ast
import functools
import inspect
import json
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from ...core._timing import Timing
from ._faults import Fault
from ._report import SimulationReport
from ._simulation import Simulation

__all__ = [
    "FAULT_TYPES",
    "ShrunkSchedule",
    "fault_expression",
    "fault_flags",
    "parse_fault",
    "shrink",
]

FAULT_TYPES: dict[str, type[Any]] = {cls.__name__: cls for cls in typing.get_args(Fault)}
"""Every fault class by name (what ``--fault`` accepts)."""


def parse_fault(text: str) -> Fault:
    """A fault from its ``repr``, e.g. ``Kill(at=600.0, who='@primary', steps=3)``.

    Only a call of a fault class with literal arguments is accepted (nothing
    is evaluated); ``ValueError`` says what is wrong otherwise.
    """
    hint = f"expected a fault such as Crash(at=600.0, who='@primary'), got {text!r}"
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        raise ValueError(hint) from None
    match node:
        case ast.Call(func=ast.Name(id=name), args=positional, keywords=keywords):
            pass
        case _:
            raise ValueError(hint)
    cls = FAULT_TYPES.get(name)
    if cls is None:
        raise ValueError(f"unknown fault {name!r}; choose from {', '.join(FAULT_TYPES)}")
    if any(keyword.arg is None for keyword in keywords):
        raise ValueError(hint)
    try:
        args = [_argument(a, text) for a in positional]
        kwargs = {str(k.arg): _argument(k.value, text) for k in keywords}
        fault: Fault = cls(*args, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bad fault {text!r}: {exc}") from None
    return fault


def number_text(value: float) -> str:
    """``value`` written short (``1080``), but exactly (``1045.722``, never ``1045.72``)."""
    text = f"{value:g}"
    return text if float(text) == value else repr(value)


def _literal(value: Any) -> str:
    # Double-quoted strings, so a shell quotes the whole fault in single quotes.
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, tuple):
        inner = ", ".join(_literal(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    return repr(value)


def fault_expression(fault: Fault) -> str:
    """``fault`` as :func:`parse_fault` reads it, strings in double quotes."""
    fields = ", ".join(
        f"{f.name}={_literal(getattr(fault, f.name))}" for f in attrs.fields(type(fault))
    )
    return f"{type(fault).__name__}({fields})"


def _argument(node: ast.expr, text: str) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise ValueError(
            f"the arguments of a fault are numbers, strings, None, True/False or tuples, "
            f"got {ast.unparse(node)!r} in {text!r}"
        ) from None


def fault_flags(faults: Sequence[Fault]) -> list[str]:
    """``simulate`` arguments that give a single run exactly ``faults``."""
    if not faults:
        return ["--no-faults"]
    return [arg for fault in faults for arg in ("--fault", fault_expression(fault))]


def timing_expression(timing: Timing) -> str:
    """A short Python expression that builds ``timing``."""
    namespace = {"Timing": Timing, "attrs": attrs}
    candidates = []
    for base_text, base in (("Timing()", Timing()), ("Timing.fast()", Timing.fast())):
        diffs = {
            f.name: getattr(timing, f.name)
            for f in attrs.fields(Timing)
            if getattr(timing, f.name) != getattr(base, f.name)
        }
        args = ", ".join(f"{k}={v!r}" for k, v in diffs.items())
        if not diffs:
            candidates.append(base_text)
        elif base_text == "Timing()":
            candidates.append(
                f"Timing({args})" if timing.is_safe else f"Timing.unsafe_unchecked({args})"
            )
        elif timing.is_safe:
            candidates.append(f"attrs.evolve(Timing.fast(), {args})")
    for text in sorted(candidates, key=len):
        if _rebuilds(text, namespace, timing):
            return text
    fields = ", ".join(f"{f.name}={getattr(timing, f.name)!r}" for f in attrs.fields(Timing))
    return f"Timing.unsafe_unchecked({fields})"


def _rebuilds(text: str, namespace: dict[str, Any], timing: Timing) -> bool:
    """Whether our own expression ``text`` builds ``timing`` again."""
    try:
        return bool(eval(text, namespace) == timing)
    except Exception:  # an expression that does not rebuild it
        return False


def _value_expression(value: Any) -> str:
    if isinstance(value, Timing):
        return timing_expression(value)
    if isinstance(value, functools.partial):
        parts = [getattr(value.func, "__name__", repr(value.func))]
        parts += [repr(a) for a in value.args]
        parts += [f"{k}={v!r}" for k, v in value.keywords.items()]
        return f"functools.partial({', '.join(parts)})"
    if callable(value):
        return getattr(value, "__qualname__", repr(value))
    return repr(value)


@attrs.frozen
class ShrunkSchedule:
    """A failing schedule shrunk by :func:`shrink`.

    ``faults`` and ``until`` still fail with one of ``kinds`` (``report`` is
    that run); ``minimal`` is ``True`` when leaving out any one fault makes
    the run pass (``False`` only when ``max_runs`` ran out first). ``runs``
    counts the simulations shrinking took.
    """

    faults: tuple[Fault, ...]
    until: float
    kinds: tuple[str, ...]
    report: SimulationReport
    original_faults: tuple[Fault, ...]
    original_until: float
    runs: int
    minimal: bool
    settings: Mapping[str, Any] = attrs.field(eq=False, repr=False)

    def python(self) -> str:
        """A Python expression that reruns the shrunk schedule."""
        defaults = inspect.signature(Simulation).parameters
        args = [
            f"{k}={_value_expression(v)}"
            for k, v in self.settings.items()
            if k not in defaults or defaults[k].default != v
            # the timing Simulation builds by itself
            if not (k == "timing" and v == Timing() and "relays" not in self.settings)
        ]
        lines = [f"Simulation({', '.join(args)}{', ' if args else ''}faults=["]
        lines += [f"    {fault!r}," for fault in self.faults]
        lines.append(f"]).run(until={self.until!r})")
        return "\n".join(lines)

    def format(self, *, command: str | None = None) -> str:
        """The shrunk schedule as a list, its failure, and how to rerun it.

        ``command`` is the command line that reruns it, when the caller can
        build one (see :func:`fault_flags`).
        """
        before, after = len(self.original_faults), len(self.faults)
        lines = [
            f"shrunk: {before} fault{'s' * (before != 1)} until "
            f"t={number_text(self.original_until)} s -> {after} fault{'s' * (after != 1)} "
            f"until t={number_text(self.until)} s ({self.runs} simulations; "
            + (
                "leaving out any one fault makes it pass)"
                if self.minimal
                else "stopped at max_runs, may shrink further)"
            ),
            "shrunk schedule:",
        ]
        lines += [f"  {i}. {fault!r}" for i, fault in enumerate(self.faults, 1)]
        if not self.faults:
            lines.append("  (no fault)")
        lines.append(f"still fails ({', '.join(self.kinds)}):")
        for v in self.report.violations:
            if v.kind in self.kinds:
                lines.append(f"  [{v.kind}] t={v.at:.3f}: {v.explanation}")
                lines += ["      " + line for line in v.excerpt.splitlines()]
        if command is not None:
            lines.append(f"reproduce: {command}")
        lines.append("in Python:")
        lines += ["  " + line for line in self.python().splitlines()]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def shrink(
    faults: Iterable[Fault],
    until: float,
    *,
    kinds: Iterable[str] | None = None,
    max_runs: int = 400,
    **settings: Any,
) -> ShrunkSchedule:
    """Shrink a failing schedule: fewest faults, then the shortest run, that still fail.

    ``settings`` are the other :class:`Simulation` arguments (``seed``,
    ``timing``, ``standbys``, ``atomic_claims``, ``runtime_factory``, ...);
    every candidate reruns ``Simulation(faults=..., **settings).run(until)``.
    "Still fails" means a violation of one of ``kinds`` (default: the kind
    of the first violation of the whole schedule). The faults are put in
    time order (ties keep theirs), then left out one
    at a time, keeping each removal that still fails; then ``until`` is
    bisected; both repeat until neither helps or ``max_runs`` simulations
    have run. ``ValueError`` when the schedule does not fail.
    """
    # in time order, as the command line schedules them (ties keep their order)
    original = tuple(sorted(faults, key=lambda f: f.at))
    timing = settings.get("timing") or Timing()
    resolution = max(0.001, timing.heartbeat_interval / 60)
    runs = 0

    def run(schedule: Sequence[Fault], end: float) -> SimulationReport:
        nonlocal runs
        runs += 1
        sim = Simulation(faults=schedule, **settings)
        try:
            return sim.run(until=end)
        finally:
            sim.close()

    best = run(original, until)
    if not best.violations:
        raise ValueError("the schedule does not fail: there is nothing to shrink")
    target = tuple(dict.fromkeys(kinds)) if kinds is not None else (best.violations[0].kind,)

    def fails(report: SimulationReport) -> bool:
        return any(v.kind in target for v in report.violations)

    if not fails(best):
        raise ValueError(f"the schedule fails, but not with {', '.join(target)}")
    current = list(original)
    horizon = until
    minimal = False
    while runs < max_runs:
        removed = False
        index = 0
        while index < len(current) and runs < max_runs:
            trial = current[:index] + current[index + 1 :]
            report = run(trial, horizon)
            if fails(report):
                current, best, removed = trial, report, True
            else:
                index += 1
        if runs >= max_runs:
            break
        if not removed and horizon < until:
            minimal = True  # a full pass at this horizon removed nothing
            break
        lo, hi = 0.0, horizon
        while hi - lo > resolution and runs < max_runs:
            mid = round((lo + hi) / 2, 3)
            if mid in (lo, hi):
                break
            report = run(current, mid)
            if fails(report):
                hi, best = mid, report
            else:
                lo = mid
        shorter = hi < horizon
        horizon = hi
        if not shorter and not removed:
            minimal = True
            break
    return ShrunkSchedule(
        faults=tuple(current),
        until=horizon,
        kinds=target,
        report=best,
        original_faults=original,
        original_until=until,
        runs=runs,
        minimal=minimal,
        settings=dict(settings),
    )
