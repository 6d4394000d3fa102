"""The README's code and the examples keep working."""

from __future__ import annotations

import re
import runpy
from pathlib import Path
from typing import Any

import pytest

from standby import Timing

ROOT = Path(__file__).resolve().parent.parent


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)


def test_readme_python_blocks_run(capsys: pytest.CaptureFixture[str]) -> None:
    blocks = python_blocks(ROOT / "README.md")
    assert blocks, "the README shows a usage example"
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    assert "1180.0" in out
    assert "QueryHeartbeats" in out


def test_helpers_example_runs_to_a_promotion(capsys: pytest.CaptureFixture[str]) -> None:
    runpy.run_path(str(ROOT / "examples" / "helpers.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "spawning with fencing token 1048576" in out
    assert "Promoted" in out


def test_silence_math_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    runpy.run_path(str(ROOT / "examples" / "silence_math.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "silent from t+180s" in out
    assert "t+225s silent? True" in out
    assert "t+224s silent? False" in out
    assert "['job-1']" in out


def test_node_docs_name_every_error_accept_raises() -> None:
    text = (ROOT / "docs" / "node.md").read_text(encoding="utf-8")
    start = text.index("- `await node.accept(request)`")
    bullet = text[start : text.index("\n- ", start + 1)]
    for error in (
        "NotAddressedError",
        "IdentityError",
        "InvalidSlot",
        "TopologyError",
        "StoreError",
    ):
        assert f"`{error}`" in bullet, error


def partition_recipe() -> Any:
    """``partition_search`` from the worked example of docs/testing.md."""
    (block,) = [
        b for b in python_blocks(ROOT / "docs" / "testing.md") if "def partition_search" in b
    ]
    namespace: dict[str, Any] = {"__name__": "docs_testing", "MY_TIMING": Timing()}
    exec(compile(block, "docs/testing.md", "exec"), namespace)
    return namespace["partition_search"]


def test_the_partition_recipe_finds_the_unsafe_reference_timing() -> None:
    """Lease 420 s, silence 180 s: the recipe must report two live containers."""
    unsafe = Timing.unsafe_unchecked(lease=420.0, suspect_after=120.0)
    with pytest.raises(AssertionError, match="two-live"):
        partition_recipe()(unsafe)()


def test_the_partition_recipe_passes_the_default_timing() -> None:
    partition_recipe()(Timing())()
