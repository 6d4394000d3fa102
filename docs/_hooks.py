"""mkdocs hooks: the parts of the site that are generated from the code.

- The safety page's list of timing rules comes from the rule table in
  ``standby/core/_timing.py`` (marker ``<!-- generated: timing-rules -->``).
- The concepts page's table of slot phase moves comes from ``TRANSITIONS``
  in ``standby/core/_transitions.py`` (marker ``<!-- generated: slot-transitions -->``),
  its table of what a slot's deadline does from ``ON_DEADLINE`` and
  ``STEP_LEADS_TO`` beside it (marker ``<!-- generated: slot-deadlines -->``),
  and its table of what an accepted message does from ``ON_INPUT``
  (marker ``<!-- generated: slot-inputs -->``).
- The failure-mode page links each failure mode to the tests named after it
  (``test_fm<N>_...`` anywhere under ``tests/``, marker
  ``<!-- generated: fm-tests N -->``), and a generated page,
  ``failure-mode-tests.md``, shows each of those tests' source.
- Guides that other work adds (``runtimes.md``, ``backends.md``,
  ``scale.md``) join the navigation when their file exists.

The generating functions need no mkdocs, so the tests call them directly
(``tests/test_docs_site.py``) and check that the pages and the code agree.
"""

from __future__ import annotations

import ast
import logging
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"

#: Failure modes of the safety model (docs/failure-modes.md; from 27 on,
#: numbered as they are found): each needs a named test.
FAILURE_MODES: tuple[int, ...] = tuple(range(1, 34))

TESTS_PAGE = "failure-mode-tests.md"

#: Guides written elsewhere: (title, file, the nav entry they follow).
OPTIONAL_GUIDES = (
    ("Scale", "scale.md", "deployment.md"),
    ("Runtimes", "runtimes.md", "adapters.md"),
    ("Backends", "backends.md", "runtimes.md"),
)

RULES_MARKER = "<!-- generated: timing-rules -->"
SLOT_MARKER = "<!-- generated: slot-transitions -->"
DEADLINE_MARKER = "<!-- generated: slot-deadlines -->"
INPUT_MARKER = "<!-- generated: slot-inputs -->"
LIFECYCLE_MARKER = "<!-- generated: lifecycle-moves -->"
#: How the table names ``None`` (a slot not in the table) on each side.
SLOT_ENTERS = "*(reserved or restored)*"
SLOT_LEAVES = "*(leaves the table)*"
FM_MARKER = re.compile(r"<!-- generated: fm-tests (\d+) -->")
FM_TEST = re.compile(r"^test_fm(\d+)_\w+$")

log = logging.getLogger("mkdocs.hooks.standby")


def _standby() -> Any:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import standby.core._timing

    return standby.core._timing


# ---------------------------------------------------------------- timing rules


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def timing_rules_markdown() -> str:
    """The table of every rule ``Timing`` enforces, with why it exists."""
    lines = ["| rule | why |", "|---|---|"]
    for rule, why in _standby().rule_descriptions():
        lines.append(f"| `{_cell(rule)}` | {_cell(why)} |")
    return "\n".join(lines)


# ------------------------------------------------------------ slot transitions


def slot_transitions_markdown() -> str:
    """The table of every legal phase move of a slot, drawn from ``TRANSITIONS``."""
    _standby()
    import standby.core._election as election

    order: list[Any] = [None, *election.Phase]
    lines = ["| from | may move to |", "|---|---|"]
    for old in order:
        targets = election.TRANSITIONS.get(old)
        if targets is None:
            continue
        names = [
            SLOT_LEAVES if new is None else f"`{new.name}`"
            for new in [*order[1:], None]
            if new in targets
        ]
        source = SLOT_ENTERS if old is None else f"`{old.name}`"
        lines.append(f"| {source} | {', '.join(names)} |")
    return "\n".join(lines)


def lifecycle_moves_markdown() -> str:
    """The table of every legal state move of a workload, drawn from ``LIFECYCLE_MOVES``."""
    _standby()
    import standby.core._lifecycle as lifecycle

    lines = ["| from | may move to |", "|---|---|"]
    for old, targets in lifecycle.LIFECYCLE_MOVES.items():
        names = [f"`{new.name}`" for new in lifecycle.LifecycleState if new in targets]
        lines.append(f"| `{old.name}` | {', '.join(names) or '(final)'} |")
    return "\n".join(lines)


def _leads_to(transitions: Any, step: Any) -> str:
    leads_to = transitions.STEP_LEADS_TO[step]
    names = [
        SLOT_LEAVES if new is None else f"`{new.name}`"
        for new in [*transitions.Phase, None]
        if new in leads_to
    ]
    return ", ".join(names)


def slot_inputs_markdown() -> str:
    """The table of the step an accepted message takes, by kind and phase, from ``ON_INPUT``."""
    _standby()
    import standby.core._transitions as transitions

    lines = ["| input | in phase | step | then in |", "|---|---|---|---|"]
    for kind, steps in transitions.ON_INPUT.items():
        by_step: dict[Any, list[str]] = {}
        for phase, step in steps.items():
            by_step.setdefault(step, []).append(f"`{phase.name}`")
        for step, phases in by_step.items():
            lines.append(
                f"| {_cell(kind.value)} | {', '.join(phases)} | {_cell(step.value)} "
                f"| {_leads_to(transitions, step)} |"
            )
    return "\n".join(lines)


def slot_deadlines_markdown() -> str:
    """The table of the step a slot takes on its deadline, by phase, from ``ON_DEADLINE``."""
    _standby()
    import standby.core._transitions as transitions

    lines = ["| phase | on its deadline | then in |", "|---|---|---|"]
    for phase, step in transitions.ON_DEADLINE.items():
        leads_to = transitions.STEP_LEADS_TO[step]
        names = [
            SLOT_LEAVES if new is None else f"`{new.name}`"
            for new in [*transitions.Phase, None]
            if new in leads_to
        ]
        lines.append(f"| `{phase.name}` | {_cell(step.value)} | {', '.join(names)} |")
    return "\n".join(lines)


# --------------------------------------------------------------- failure modes


class FailureModeTest(NamedTuple):
    """One test named after a failure mode."""

    mode: int
    name: str
    path: str
    """Relative to the repository root, with ``/``."""
    line: int
    source: str


def failure_mode_tests(tests: Path = TESTS) -> dict[int, list[FailureModeTest]]:
    """Every ``test_fm<N>_...`` function under ``tests``, by failure mode, in file order."""
    found: dict[int, list[FailureModeTest]] = {}
    for path in sorted(tests.rglob("test_*.py")):
        text = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(text, filename=str(path))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            match = FM_TEST.match(node.name)
            if match is None:
                continue
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            lines = text.splitlines()[start - 1 : node.end_lineno]
            source = "\n".join(lines)
            mode = int(match.group(1))
            found.setdefault(mode, []).append(
                FailureModeTest(
                    mode=mode,
                    name=node.name,
                    path=path.relative_to(tests.parent).as_posix(),
                    line=node.lineno,
                    source=source,
                )
            )
    return found


def missing_failure_modes(found: dict[int, list[FailureModeTest]]) -> list[int]:
    """The failure modes without a named test."""
    return [mode for mode in FAILURE_MODES if not found.get(mode)]


def fm_links(mode: int, found: dict[int, list[FailureModeTest]]) -> str:
    """The table cell for one failure mode: a link to each of its tests."""
    tests = found.get(mode, [])
    if not tests:
        return "*no test on this branch yet*"
    return "<br>".join(f"[`{t.name}`]({TESTS_PAGE}#{t.name})" for t in tests)


def tests_page(found: dict[int, list[FailureModeTest]]) -> str:
    """The generated page that shows the source of every failure-mode test."""
    out = [
        "# Failure-mode tests",
        "",
        "Generated from the test suite: every test named `test_fm<N>_...`, by",
        "failure mode, with its source. The [failure modes](failure-modes.md)",
        "page says what each one is.",
        "",
    ]
    for mode in FAILURE_MODES:
        out.append(f"## Failure mode {mode} {{ #fm{mode} }}")
        out.append("")
        tests = found.get(mode, [])
        if not tests:
            out.extend(["No test on this branch yet.", ""])
        for test in tests:
            out.extend(
                [
                    f"### {test.name} {{ #{test.name} }}",
                    "",
                    f"`{test.path}`, line {test.line}",
                    "",
                    "```python",
                    test.source,
                    "```",
                    "",
                ]
            )
    return "\n".join(out)


# ------------------------------------------------------------------- rendering


def render(
    markdown: str,
    found: dict[int, list[FailureModeTest]] | None = None,
    docs_dir: Path = ROOT / "docs",
) -> str:
    """A page's ``markdown`` with its markers filled in (``found``: the tests to link).

    A link to an optional guide that is not there yet keeps its text and
    loses its target, so the page reads the same and the build stays strict.
    """
    for _, page, _ in OPTIONAL_GUIDES:
        if not (docs_dir / page).exists():
            markdown = re.sub(rf"\[([^\]]+)\]\({re.escape(page)}(#[^)]*)?\)", r"\1", markdown)
    if RULES_MARKER in markdown:
        markdown = markdown.replace(RULES_MARKER, timing_rules_markdown())
    if SLOT_MARKER in markdown:
        markdown = markdown.replace(SLOT_MARKER, slot_transitions_markdown())
    if DEADLINE_MARKER in markdown:
        markdown = markdown.replace(DEADLINE_MARKER, slot_deadlines_markdown())
    if INPUT_MARKER in markdown:
        markdown = markdown.replace(INPUT_MARKER, slot_inputs_markdown())
    if LIFECYCLE_MARKER in markdown:
        markdown = markdown.replace(LIFECYCLE_MARKER, lifecycle_moves_markdown())
    if FM_MARKER.search(markdown):
        tests = failure_mode_tests() if found is None else found
        markdown = FM_MARKER.sub(lambda m: fm_links(int(m.group(1)), tests), markdown)
    return markdown


def _insert_guides(nav: list[Any], docs_dir: Path) -> None:
    for item in nav:
        if isinstance(item, dict) and "Guides" in item:
            guides: list[Any] = item["Guides"]
            break
    else:
        return
    for title, page, after in OPTIONAL_GUIDES:
        if not (docs_dir / page).exists() or any(page in entry.values() for entry in guides):
            continue
        index = next(
            (i + 1 for i, entry in enumerate(guides) if after in entry.values()), len(guides)
        )
        guides.insert(index, {title: page})


def _report_missing(found: dict[int, list[FailureModeTest]]) -> Iterable[int]:
    missing = missing_failure_modes(found)
    if missing:
        log.info("failure modes without a named test yet: %s", ", ".join(map(str, missing)))
    return missing


# --------------------------------------------------------------- mkdocs events


def on_config(config: Any) -> Any:
    """Add the optional guides that exist to the navigation."""
    _insert_guides(config["nav"], Path(config["docs_dir"]))
    return config


def on_files(files: Any, config: Any) -> Any:
    """Add the generated page of failure-mode tests."""
    from mkdocs.structure.files import File

    found = failure_mode_tests()
    _report_missing(found)
    files.append(File.generated(config, TESTS_PAGE, content=tests_page(found)))
    # The timeline pictures, drawn from simulations of the code being built.
    for name, svg in _timeline_pictures().items():
        files.append(File.generated(config, f"timelines/{name}", content=svg))
    return files


def _timeline_pictures() -> dict[str, str]:
    import importlib.util

    spec = importlib.util.spec_from_file_location("_timelines", ROOT / "docs" / "_timelines.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    pictures: dict[str, str] = module.timelines()
    return pictures


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Fill in the generated parts of a page."""
    return render(markdown, docs_dir=Path(config["docs_dir"]))
