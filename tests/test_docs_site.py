"""The documentation site: its code runs, its generated parts agree with the code.

Every ```python block under ``docs/`` runs here, the blocks of one page in
order in one namespace (a page builds its example up step by step). A block
that shows a piece of a program on purpose is fenced ```python-fragment and
is not run; no other fence info than those of :data:`FENCES` is allowed.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from _nostr_relays import nostr_relays, relays  # noqa: F401
from _real import REQUIRE_REAL

from standby.core._timing import _RULES, rule_descriptions

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

#: The fence info strings a docs page may use.
FENCES = {"python", "python-fragment", "sh", "text", "json"}

#: Failure modes whose fix is still open: listed, with a row, but without a
#: named test yet. Reported, not failed. (None today.)
AWAITED: set[int] = set()


def load_hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("standby_docs_hooks", DOCS / "_hooks.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hooks = load_hooks()


def fenced_blocks(path: Path) -> list[tuple[str, str, int]]:
    """``(info, code, line)`` of every fenced block of a page."""
    blocks: list[tuple[str, str, int]] = []
    info: str | None = None
    body: list[str] = []
    start = 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.startswith("```"):
            if info is not None:
                body.append(line)
            continue
        if info is None:
            info, body, start = line[3:].strip(), [], number
        else:
            blocks.append((info, "\n".join(body) + "\n", start))
            info = None
    assert info is None, f"{path.name}: the block opened on line {start} is never closed"
    return blocks


PAGES = sorted(DOCS.glob("*.md"))
PAGES_WITH_PYTHON = [p for p in PAGES if any(i == "python" for i, _, _ in fenced_blocks(p))]


def test_every_fence_names_a_known_language() -> None:
    unknown = [
        f"{page.name}:{line} {info!r}"
        for page in PAGES
        for info, _, line in fenced_blocks(page)
        if info not in FENCES
    ]
    assert unknown == []


@pytest.mark.parametrize("page", PAGES_WITH_PYTHON, ids=lambda p: p.name)
def test_python_blocks_of_the_page_run(
    page: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    if page.name == "nostr.md":
        # the page's example reads its key and relays from the environment
        from standby.adapters.nostr import NostrKeys

        cluster = request.getfixturevalue("relays")
        monkeypatch.setenv("PROVIDER_NSEC", NostrKeys.generate().nsec)
        monkeypatch.setenv("STANDBY_RELAYS", " ".join(cluster.urls))
    if page.name == "backends.md":
        # the examples build (and do not connect) transports with these
        monkeypatch.setenv("ETCD_PASSWORD", "etcd-secret")
        monkeypatch.setenv("REDIS_PASSWORD", "redis-secret")
    namespace: dict[str, Any] = {"__name__": f"docs_{page.stem}"}
    for info, code, line in fenced_blocks(page):
        if info != "python":
            continue
        # line numbers in a traceback point into the page
        source = "\n" * line + code
        exec(compile(source, str(page), "exec"), namespace)
    capsys.readouterr()


def test_timing_page_shows_the_error_it_prints(capsys: pytest.CaptureFixture[str]) -> None:
    blocks = fenced_blocks(DOCS / "timing.md")
    python = [code for info, code, _ in blocks if info == "python"]
    (shown,) = [code for info, code, _ in blocks if info == "text"]
    namespace: dict[str, Any] = {"__name__": "docs_timing"}
    capsys.readouterr()
    (failing,) = [code for code in python if "except UnsafeTiming as error:\n    for" in code]
    exec(compile(failing, "timing.md", "exec"), namespace)
    assert capsys.readouterr().out == shown


def test_core_and_wire_pages_hold_complete_examples() -> None:
    for name in ("core.md", "wire.md"):
        blocks = [info for info, _, _ in fenced_blocks(DOCS / name)]
        assert "python" in blocks, name
        assert "python-fragment" not in blocks, name


# ------------------------------------------------------------- generated parts


def table_rows(markdown: str, header: str) -> list[list[str]]:
    """The rows of the Markdown table whose header line is ``header``."""
    lines = markdown.splitlines()
    start = lines.index(header) + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = re.split(r"(?<!\\)\|", line.strip().strip("|"))
        rows.append([cell.strip().replace("\\|", "|") for cell in cells])
    return rows


def test_safety_page_lists_exactly_the_rules_timing_enforces() -> None:
    source = (DOCS / "safety.md").read_text(encoding="utf-8")
    assert source.count(hooks.RULES_MARKER) == 1
    rendered = hooks.render(source)
    rows = table_rows(rendered, "| rule | why |")
    listed = [rule.strip("`") for rule, _ in rows]
    checked = {rule.name for rule in _RULES}
    assert set(listed[1:]) == checked  # the first row is the rule on durations
    assert listed == [rule for rule, _ in rule_descriptions()]
    assert all(why for _, why in rows)
    assert len(listed) == len(set(listed))


def test_each_listed_rule_is_one_timing_refuses() -> None:
    # Break one rule at a time (from the defaults) and find it by name in
    # the safety page: the page names what the code reports.
    from standby import Timing, UnsafeTiming

    listed = {rule for rule, _ in rule_descriptions()}
    breakers: list[dict[str, Any]] = [
        {"silence": 100.0},
        {"relay_count": 0, "write_quorum": 1, "read_quorum": 1},
        {"write_quorum": 4, "read_quorum": 1},
        {"read_quorum": 4, "write_quorum": 3},
        {"write_quorum": 1, "read_quorum": 1},
        {"claim_settle": 9.0},
        {"claim_timeout": 8.0},
        {"lease": 50.0, "heartbeat_interval": 55.0, "suspect_after": 56.0},
        {"spawn_timeout": 200.0},
        {"suspect_after": 30.0},
        {"max_spawn_attempts": 0},
        {"max_spawn_rounds": 0},
    ]
    seen: set[str] = set()
    for change in breakers:
        with pytest.raises(UnsafeTiming) as caught:
            Timing(**change)
        seen.update(caught.value.rules)
    assert seen <= listed
    assert seen == listed - {rule_descriptions()[0][0]}


def test_every_failure_mode_has_a_named_test(capsys: pytest.CaptureFixture[str]) -> None:
    found = hooks.failure_mode_tests()
    missing = hooks.missing_failure_modes(found)
    if missing:
        with capsys.disabled():
            print(f"\nfailure modes without a named test on this branch: {missing}")
    assert set(missing) <= AWAITED, f"failure modes without a test: {missing}"
    assert set(found) <= set(hooks.FAILURE_MODES), sorted(found)


def test_failure_mode_page_links_every_named_test() -> None:
    found = hooks.failure_mode_tests()
    source = (DOCS / "failure-modes.md").read_text(encoding="utf-8")
    rendered = hooks.render(source, found)
    rows = table_rows(rendered, "| # | what went wrong | what `standby` does | tests |")
    assert [int(row[0]) for row in rows] == list(hooks.FAILURE_MODES)
    page = hooks.tests_page(found)
    for row in rows:
        mode = int(row[0])
        linked = re.findall(r"\]\(failure-mode-tests\.md#(\w+)\)", row[3])
        assert linked == [test.name for test in found.get(mode, [])], mode
        for name in linked:
            assert f"{{ #{name} }}" in page
            assert f"def {name}(" in page


def test_docs_name_only_tests_that_exist() -> None:
    defined = {
        node.name
        for path in (ROOT / "tests").rglob("test_*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    }
    named = {
        name
        for page in PAGES
        for name in re.findall(r"`(test_\w+)`", page.read_text(encoding="utf-8"))
    }
    assert named
    assert named - defined == set()


def test_optional_guides_join_the_nav_only_when_present(tmp_path: Path) -> None:
    nav: list[Any] = [{"Guides": [{"Deployment": "deployment.md"}, {"Adapters": "adapters.md"}]}]
    (tmp_path / "runtimes.md").write_text("# Runtimes\n")
    hooks._insert_guides(nav, tmp_path)
    assert nav[0]["Guides"] == [
        {"Deployment": "deployment.md"},
        {"Adapters": "adapters.md"},
        {"Runtimes": "runtimes.md"},
    ]
    text = "see [the runtimes](runtimes.md#supervisor) and [scale](scale.md)"
    assert (
        hooks.render(text, docs_dir=tmp_path)
        == "see [the runtimes](runtimes.md#supervisor) and scale"
    )


# ------------------------------------------------------------------ the build


def test_site_builds_strict_and_offline(tmp_path: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None:
        text = "mkdocs is not installed: pip install -e '.[docs]'"
        if REQUIRE_REAL:
            pytest.fail(f"{text} (STANDBY_REQUIRE_REAL is set)", pytrace=False)
        pytest.skip(text)
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    safety = (site / "safety" / "index.html").read_text(encoding="utf-8")
    for rule, _ in rule_descriptions():
        escaped = rule.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        assert escaped in safety, rule
    tests_page = (site / "failure-mode-tests" / "index.html").read_text(encoding="utf-8")
    for tests in hooks.failure_mode_tests().values():
        for test in tests:
            assert f'id="{test.name}"' in tests_page, test.name
    reference = (site / "reference" / "standby" / "index.html").read_text(encoding="utf-8")
    for name in ("standby.Timing.for_target", "standby.StandbyNode", "standby.StandbyElection"):
        assert f'id="{name}"' in reference, name
    core = (site / "reference" / "core" / "index.html").read_text(encoding="utf-8")
    for name in ("standby.core.Phase", "standby.core.StandbyElection", "standby.core.Spawn"):
        assert f'id="{name}"' in core, name
    assert not list(site.rglob("*.py")), "the hooks are not part of the site"
    assert not list(site.rglob("__pycache__")), "nor their bytecode"
    for page in site.rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        external = re.findall(r'<(?:link|script|img)[^>]+(?:href|src)="(https?:[^"]+)"', html)
        assert external == [], (page, external)
        assert "fonts.googleapis" not in html


def test_concepts_page_shows_exactly_the_slot_transitions() -> None:
    from standby.core._election import TRANSITIONS, Phase

    source = (DOCS / "concepts.md").read_text(encoding="utf-8")
    assert source.count(hooks.SLOT_MARKER) == 1
    rendered = hooks.render(source)
    assert hooks.SLOT_MARKER not in rendered

    def phase(cell: str) -> Phase | None:
        cell = cell.strip()
        if cell in (hooks.SLOT_ENTERS, hooks.SLOT_LEAVES):
            return None
        return Phase[cell.strip("`")]

    shown = {
        phase(source_cell): frozenset(phase(c) for c in targets.split(","))
        for source_cell, targets in table_rows(rendered, "| from | may move to |")
    }
    assert shown == dict(TRANSITIONS)
    assert set(TRANSITIONS) == {None, *Phase}


def test_concepts_page_shows_exactly_the_step_each_deadline_takes() -> None:
    from standby.core._transitions import ON_DEADLINE, STEP_LEADS_TO, Phase, Step

    source = (DOCS / "concepts.md").read_text(encoding="utf-8")
    assert source.count(hooks.DEADLINE_MARKER) == 1
    rendered = hooks.render(source)
    assert hooks.DEADLINE_MARKER not in rendered

    def phase(cell: str) -> Phase | None:
        cell = cell.strip()
        return None if cell == hooks.SLOT_LEAVES else Phase[cell.strip("`")]

    rows = table_rows(rendered, "| phase | on its deadline | then in |")
    shown = {phase(p): Step(does) for p, does, _ in rows}
    assert shown == dict(ON_DEADLINE)
    for p, _, leads_to in rows:
        assert (
            frozenset(phase(c) for c in leads_to.split(","))
            == STEP_LEADS_TO[ON_DEADLINE[Phase[p.strip("`")]]]
        )


def test_concepts_page_shows_exactly_the_step_each_input_takes() -> None:
    from standby.core._transitions import ON_INPUT, Input, Phase, Step

    source = (DOCS / "concepts.md").read_text(encoding="utf-8")
    assert source.count(hooks.INPUT_MARKER) == 1
    rendered = hooks.render(source)
    assert hooks.INPUT_MARKER not in rendered
    shown: dict[Input, dict[Phase, Step]] = {}
    for kind, phases, step, _ in table_rows(rendered, "| input | in phase | step | then in |"):
        for cell in phases.split(","):
            shown.setdefault(Input(kind), {})[Phase[cell.strip().strip("`")]] = Step(step)
    assert shown == {kind: dict(steps) for kind, steps in ON_INPUT.items()}


# ------------------------------------------------------------ the adapter contract

CONTRACT_PROTOCOLS = (
    "RelayTransport",
    "Subscription",
    "AtomicClaims",
    "ReportsDrops",
    "WaitsConnected",
    "ContainerRuntime",
    "ChecksSpecs",
    "SlotStore",
)


def _protocol_members(cls: type) -> list[str]:
    """Every member of a protocol class as the contract page writes it."""
    import inspect

    out = []
    for name, value in vars(cls).items():
        if name.startswith("_") and name not in ("__aiter__", "__anext__"):
            continue
        if isinstance(value, property):
            out.append(f"{name} (property)")
            continue
        if not inspect.isfunction(value):
            continue
        parts: list[str] = []
        starred = False
        for parameter in list(inspect.signature(value).parameters.values())[1:]:
            if parameter.kind is parameter.KEYWORD_ONLY and not starred:
                parts.append("*")
                starred = True
            default = parameter.default
            shown = parameter.name
            if default is not parameter.empty:
                shown += f"={default!r}"
            parts.append(shown)
        prefix = "await " if inspect.iscoroutinefunction(value) else ""
        out.append(f"{prefix}{name}({', '.join(parts)})")
    return sorted(out)


def _contract_members(page: str, protocol: str) -> list[str]:
    start = page.index(f"### `{protocol}`\n")
    end = page.find("\n#", start + 1)
    section = page[start : end if end != -1 else None]
    rows = table_rows(section, "| member | contract |")
    members = []
    for row in rows:
        cell = row[0]
        match = re.fullmatch(r"`([^`]+)`( \(property\))?", cell)
        assert match, f"{protocol}: cannot read the member cell {cell!r}"
        members.append(match.group(1) + (match.group(2) or ""))
    return sorted(members)


@pytest.mark.parametrize("protocol", CONTRACT_PROTOCOLS)
def test_the_adapter_contract_lists_every_member_of_every_protocol(protocol: str) -> None:
    # The page said "everything the node relies on" but gave spawn without
    # lease_end and no renew, list, stop_grace, load_state or save_state.
    import standby.protocols._contracts

    page = (DOCS / "conformance.md").read_text(encoding="utf-8")
    contract = page[page.index("## The adapter contract") :]
    contract = contract[: contract.index("\n## ", 1)]
    cls = getattr(standby.protocols._contracts, protocol)
    assert _contract_members(contract, protocol) == _protocol_members(cls)


def test_the_contract_names_every_protocol_class() -> None:
    import inspect
    from typing import Protocol

    import standby.protocols._contracts

    protocols = {
        name
        for name, value in vars(standby.protocols._contracts).items()
        if inspect.isclass(value) and Protocol in value.__bases__
    }
    assert protocols == set(CONTRACT_PROTOCOLS)


#: A file cited in a page, a docstring or a comment: ``name.md`` anywhere, or a
#: path with a directory (``tests/_etcd.py``, ``docs/safety.md``).
CITED_FILE = re.compile(r"(?<![\w/.:-])((?:[\w.-]+/)*[\w-]+\.(?:md|py|toml|yml|yaml))(?![\w/])")
#: Pages the docs build generates.
GENERATED_PAGES = {"failure-mode-tests.md"}


def test_no_doc_or_docstring_cites_a_file_that_is_not_in_the_repo() -> None:
    # Five pages and several docstrings cited a SAFETY.md the repo does not contain.
    sources = [
        *sorted(DOCS.glob("*.md")),
        *sorted(DOCS.glob("*.py")),
        ROOT / "README.md",
        *sorted((ROOT / "examples").glob("*.py")),
        *sorted((ROOT / "standby").rglob("*.py")),
    ]
    missing = []
    for source in sources:
        for match in CITED_FILE.finditer(source.read_text(encoding="utf-8")):
            cited = match.group(1)
            if "/" not in cited and not cited.endswith(".md"):
                continue  # a bare module name: not a path
            if cited in GENERATED_PAGES:
                continue
            places = (ROOT / cited, DOCS / cited, source.parent / cited)
            if not any(place.exists() for place in places):
                missing.append(f"{source.relative_to(ROOT)}: {cited}")
    assert missing == []


def _adapter_modules() -> dict[str, list[str]]:
    """Public modules of ``standby.adapters`` and the public classes each exports."""
    import importlib
    import inspect

    found = {}
    for path in sorted((ROOT / "standby" / "adapters").glob("*.py")):
        if path.name.startswith("_"):
            continue
        module = importlib.import_module(f"standby.adapters.{path.stem}")
        names = getattr(module, "__all__", [])
        classes = [n for n in names if inspect.isclass(getattr(module, n))]
        if classes:
            found[module.__name__] = classes
    return found


def test_every_shipped_adapter_is_listed_and_has_a_reference_page() -> None:
    # The "shipped" column and the API reference left out the process,
    # podman, etcd, Redis and Nostr adapters.
    page = (DOCS / "adapters.md").read_text(encoding="utf-8")
    rows = table_rows(page, "| protocol | what it does | shipped |")
    shipped = " ".join(row[2] for row in rows)
    references = " ".join(
        p.read_text(encoding="utf-8") for p in sorted((DOCS / "reference").glob("*.md"))
    )
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    modules = _adapter_modules()
    assert {"standby.adapters.process", "standby.adapters.etcd"} <= set(modules)
    for module in modules:
        assert f"`{module}`" in shipped, module
        assert f"::: {module}\n" in references, module
        assert f"- {module}: reference/" in nav, module


def test_the_architecture_page_names_every_layer_package() -> None:
    import pkgutil

    import standby

    page = (DOCS / "architecture.md").read_text(encoding="utf-8")
    rows = table_rows(page, "| package | layer | what it holds | its public face |")
    listed = {row[0].strip("`"): row[1] for row in rows}
    packages = {
        info.name
        for info in pkgutil.walk_packages(standby.__path__, "standby.")
        if info.ispkg and not info.name.rpartition(".")[2].startswith("_")
    }
    assert set(listed) == packages
    for package, layer in listed.items():
        assert package.split(".")[1] == layer  # a module's layer is its first component


def test_core_page_shows_exactly_the_lifecycle_moves() -> None:
    from standby.core import LifecycleState
    from standby.core._lifecycle import LIFECYCLE_MOVES

    source = (DOCS / "core.md").read_text(encoding="utf-8")
    assert source.count(hooks.LIFECYCLE_MARKER) == 1
    rendered = hooks.render(source)
    shown = {
        LifecycleState[old.strip("`")]: frozenset(
            LifecycleState[t.strip().strip("`")] for t in targets.split(",") if "`" in t
        )
        for old, targets in table_rows(rendered, "| from | may move to |")
    }
    assert shown == dict(LIFECYCLE_MOVES)
