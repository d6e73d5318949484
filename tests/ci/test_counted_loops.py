"""A test that checks every resource of a plan in a loop passes vacuously when the loop finds none: a
renamed type, a filter that no longer matches, a fixture that built nothing. So in the stack and policy
tests, a loop that asserts must sit beside an assertion of what it iterates over (how many it found)."""

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCOPES = ("tests/stacks", "tests/policies")


def _is_fixed(iterable: ast.expr) -> bool:
    """A literal, a `range`, a module constant, or a pairing of one: its length is in the source."""
    if isinstance(iterable, (ast.List, ast.Tuple, ast.Set, ast.Dict, ast.Constant)):
        return True
    if isinstance(iterable, ast.Name):
        return iterable.id.isupper()
    if isinstance(iterable, ast.Call):
        name = ast.unparse(iterable.func)
        if name == "range":
            return True
        if name in ("itertools.pairwise", "enumerate", "zip", "sorted", "reversed"):
            return all(_is_fixed(a) for a in iterable.args)
    if isinstance(iterable, ast.Attribute) and isinstance(iterable.value, ast.Name):
        return iterable.value.id.isupper()
    return False


def unguarded_loops(source: str) -> Iterator[tuple[str, int]]:
    """(test, line) of each asserting loop over a computed collection in a test with no assertion outside
    its loops."""
    for test in ast.walk(ast.parse(source)):
        if not isinstance(test, ast.FunctionDef) or not test.name.startswith("test"):
            continue
        loops = [n for n in ast.walk(test) if isinstance(n, ast.For)]
        inside = {id(n) for loop in loops for n in ast.walk(loop)}
        guarded = any(isinstance(n, ast.Assert) and id(n) not in inside for n in ast.walk(test))
        for loop in loops:
            asserts = any(isinstance(n, ast.Assert) for n in ast.walk(loop))
            if asserts and not _is_fixed(loop.iter) and not guarded:
                yield test.name, loop.lineno


def test_the_check_finds_a_vacuous_loop_and_accepts_a_counted_one() -> None:
    vacuous = "def test_a(built):\n    for r in built.of_type('x'):\n        assert r.ok\n"
    counted = (
        "def test_a(built):\n    rs = built.of_type('x')\n    assert len(rs) == 2\n"
        "    for r in rs:\n        assert r.ok\n"
    )
    fixed = "def test_a():\n    for s in STACKS:\n        assert s\n"
    assert list(unguarded_loops(vacuous)) == [("test_a", 2)]
    assert list(unguarded_loops(counted)) == []
    assert list(unguarded_loops(fixed)) == []


FILES = sorted(p for scope in SCOPES for p in (ROOT / scope).rglob("test_*.py"))


def test_the_scopes_hold_the_stack_and_policy_tests() -> None:
    assert len(FILES) > 40, [str(p) for p in FILES]


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_asserting_loop_is_counted(path: Path) -> None:
    found = list(unguarded_loops(path.read_text()))
    assert not found, f"{path.relative_to(ROOT)}: loops that may find nothing: {found}"
