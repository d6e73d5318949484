"""Mutation testing of the core modules with mutmut: a table of scores and a threshold per module.

Each module declared in ``modules.toml`` is mutated in a workspace of its own under
``reports/mutation/<module>/``: its package and ``tests/`` are copied there by mutmut, every other
entry of the repository is linked in, and a ``setup.cfg`` tells mutmut which file to mutate and
which tests to run. mutmut first runs those tests once to learn which test calls which function,
then runs each mutant against only the tests that called its function.

Score = killed / (mutants - equivalent). A mutant that only timed out or behaved oddly is not
counted as killed: on a shared machine a timeout may be load rather than a detected fault.
The run fails when a module scores under its threshold, when an entry of ``equivalent.toml`` is
stale, or when mutmut could not test a module at all.

    python -m tests.mutation.run                               # every declared module
    python -m tests.mutation.run --module serving_image/variants.py --show-survivors
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
MODULES_FILE = HERE / "modules.toml"
EQUIVALENT_FILE = HERE / "equivalent.toml"
WORKDIR = REPO / "reports" / "mutation"

# Entries of the repository never linked into a workspace: caches, the virtualenv, the workspaces.
SKIPPED_ENTRIES = frozenset(
    {
        ".git",
        ".venv",
        ".stamps",
        ".mypy_cache",
        ".ruff_cache",
        ".pytest_cache",
        "__pycache__",
        "reports",
        "mutants",
    }
)
# How mutmut 3 names a mutant's fate, grouped into the table's columns. "skipped" (a line marked
# `pragma: no mutate`) is left out of the count altogether.
KILLED = frozenset({"killed", "caught by type check"})
SURVIVED = frozenset({"survived"})
NO_TESTS = frozenset({"no tests"})
ODD = frozenset({"timeout", "suspicious", "segfault"})
UNFINISHED = frozenset({"not checked", "check was interrupted by user"})
SKIPPED = frozenset({"skipped"})
# mutmut 3's exit codes per mutant, as its stats module maps them; anything else is "suspicious".
STATUS_BY_EXIT_CODE: Mapping[int | None, str] = {
    None: "not checked",
    0: "survived",
    1: "killed",
    2: "check was interrupted by user",
    3: "killed",
    5: "no tests",
    33: "no tests",
    34: "skipped",
    35: "suspicious",
    36: "timeout",
    37: "caught by type check",
    -24: "timeout",
    24: "timeout",
    152: "timeout",
    255: "timeout",
    -11: "segfault",
    -9: "segfault",
}


# What mutmut says when no selected test calls the module's functions in the test process.
UNCOVERED = "could not find any test case for any mutant"
# What the survivors list and equivalent.toml say of a mutant that deletes a line.
REMOVED = "(line removed)"


class ConfigError(ValueError):
    """modules.toml or equivalent.toml says something the driver cannot act on."""


@dataclass(frozen=True, kw_only=True)
class Module:
    """One file to mutate and the tests that must kill its mutants."""

    path: str
    """The file, relative to the repository root (``serving_image/variants.py``)."""
    tests: tuple[str, ...]
    """Pytest paths or node ids run against its mutants."""
    threshold: float
    """Percent of non-equivalent mutants that must be killed."""
    threshold_reason: str | None = None
    """Why this module's threshold differs from the default; required when it does."""

    @property
    def name(self) -> str:
        """The dotted module name, which prefixes every mutant id of the module."""
        return self.path.removesuffix(".py").replace("/", ".")

    @property
    def package(self) -> str:
        """The top-level package mutmut copies into the workspace."""
        return self.path.split("/")[0]


@dataclass(frozen=True, kw_only=True)
class Equivalent:
    """A surviving mutant that no test can kill, with the line it writes and why."""

    id: str
    mutated: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class Change:
    """What one mutant changes: the line of the source file, before and after."""

    line: int
    before: str
    after: str


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """How one module fared: every mutant's status, the run's wall time and its equivalents."""

    module: Module
    statuses: Mapping[str, str]
    seconds: float
    equivalent: frozenset[str] = frozenset()
    error: str | None = None

    def count(self, kinds: frozenset[str]) -> int:
        """Mutants whose status is one of ``kinds`` (equivalents not counted as survivors)."""
        return sum(1 for mid, s in self.statuses.items() if s in kinds and mid not in self.equivalent)

    @property
    def total(self) -> int:
        """Mutants tested or due to be tested ("skipped" ones are not)."""
        return sum(1 for s in self.statuses.values() if s not in SKIPPED)

    @property
    def score(self) -> float:
        """Percent of the non-equivalent mutants that a test killed."""
        relevant = self.total - len(self.equivalent)
        return 100.0 if relevant <= 0 else 100.0 * self.count(KILLED) / relevant

    @property
    def passed(self) -> bool:
        """Whether the module ran to the end and reached its threshold."""
        return self.error is None and self.count(UNFINISHED) == 0 and self.score >= self.module.threshold

    def survivors(self) -> list[str]:
        """Ids of the mutants no test killed and that are not listed as equivalent, in order."""
        not_killed = SURVIVED | NO_TESTS
        return sorted(m for m, s in self.statuses.items() if s in not_killed and m not in self.equivalent)


def load_modules(path: Path = MODULES_FILE) -> list[Module]:
    """The declared modules; an overridden threshold without a reason is a configuration error."""
    doc = tomllib.loads(path.read_text(encoding="utf-8"))
    default = float(doc["default_threshold"])
    modules = []
    for entry in doc["module"]:
        threshold = float(entry.get("threshold", default))
        reason = entry.get("threshold_reason")
        if threshold != default and not reason:
            raise ConfigError(f"{entry['path']}: a threshold other than {default:g} needs a threshold_reason")
        if not (REPO / entry["path"]).is_file():
            raise ConfigError(f"{entry['path']}: no such file in the repository")
        modules.append(
            Module(
                path=entry["path"], tests=tuple(entry["tests"]), threshold=threshold, threshold_reason=reason
            )
        )
    names = [m.name for m in modules]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path.name}: a module is declared twice")
    return modules


def load_equivalents(path: Path = EQUIVALENT_FILE) -> list[Equivalent]:
    """The equivalent mutants; each needs an id, its mutated line and a reason."""
    doc = tomllib.loads(path.read_text(encoding="utf-8"))
    equivalents = []
    for entry in doc.get("mutant", []):
        missing = [key for key in ("id", "mutated", "reason") if not str(entry.get(key, "")).strip()]
        if missing:
            raise ConfigError(f"{path.name}: entry {entry.get('id', '?')} lacks {', '.join(missing)}")
        equivalents.append(
            Equivalent(id=entry["id"], mutated=entry["mutated"].strip(), reason=entry["reason"])
        )
    ids = [e.id for e in equivalents]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{path.name}: a mutant is listed twice")
    return equivalents


def module_of(mutant_id: str) -> str:
    """The dotted module of a mutant id: the part before its mangled function name."""
    parts = mutant_id.split(".")
    for i, part in enumerate(parts):
        if part.startswith(("x_", "x\u01c1")):
            return ".".join(parts[:i])
    raise ConfigError(f"{mutant_id}: not a mutmut mutant id")


def select(modules: Sequence[Module], wanted: Sequence[str]) -> list[Module]:
    """The modules named by path or dotted name, in declared order; all of them when none is named."""
    if not wanted:
        return list(modules)
    known = {key: m for m in modules for key in (m.path, m.name)}
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise ConfigError(
            f"not a declared module: {', '.join(unknown)} (see `python -m tests.mutation.run --list`)"
        )
    chosen = {known[w].name for w in wanted}
    return [m for m in modules if m.name in chosen]


def check_equivalents(
    equivalents: Iterable[Equivalent],
    declared: Iterable[Module],
    outcomes: Mapping[str, Outcome],
    changes: Mapping[str, Change | None],
) -> list[str]:
    """Problems with the equivalent list: ids of no declared module, and, for the modules that ran,
    ids no longer generated, mutated lines that changed, and mutants a test now kills."""
    declared_names = {m.name for m in declared}
    problems = []
    for eq in equivalents:
        name = module_of(eq.id)
        if name not in declared_names:
            problems.append(f"{eq.id}: stale, {name} is not a declared module")
            continue
        outcome = outcomes.get(name)
        if outcome is None or outcome.error is not None:
            continue
        status = outcome.statuses.get(eq.id)
        change = changes.get(eq.id)
        if status is None:
            problems.append(f"{eq.id}: stale, mutmut no longer generates this mutant")
        elif change is not None and change.after.strip() != eq.mutated:
            problems.append(f"{eq.id}: stale, it now writes {change.after.strip()!r}, not {eq.mutated!r}")
        elif status in KILLED:
            problems.append(f"{eq.id}: listed as equivalent but a test kills it")
    return problems


def mutmut_config(module: Module) -> str:
    """The setup.cfg section that points mutmut at one file and its tests."""
    tests = "".join(f"\n    {t}" for t in module.tests)
    return (
        "# Written by tests/mutation/run.py for this workspace only.\n"
        "[mutmut]\n"
        f"source_paths = {module.package}\n"
        f"only_mutate = {module.path}\n"
        f"pytest_add_cli_args_test_selection ={tests}\n"
        # The workspace is rebuilt for every run, so there is no earlier run to compare with.
        "use_git_change_detection = false\n"
    )


def prepare_workspace(module: Module, root: Path) -> Path:
    """A fresh workspace for one module: mutmut copies what it mutates and the tests into
    ``mutants/``; everything else the tests read (stack files, .tools, other packages) is linked."""
    workspace = root / module.name
    if workspace.exists():
        shutil.rmtree(workspace)
    (workspace / "mutants").mkdir(parents=True)
    copied_by_mutmut = {module.package, "tests", "pyproject.toml"}
    for entry in sorted(REPO.iterdir()):
        if entry.name in SKIPPED_ENTRIES or entry.name.endswith(".egg-info"):
            continue
        home = workspace if entry.name in copied_by_mutmut else workspace / "mutants"
        (home / entry.name).symlink_to(entry)
    (workspace / "setup.cfg").write_text(mutmut_config(module), encoding="utf-8")
    return workspace


def read_statuses(workspace: Path, module: Module) -> dict[str, str]:
    """Every mutant of the module and its status, from mutmut's meta file (none before it exists)."""
    path = workspace / "mutants" / f"{module.path}.meta"
    if not path.is_file():
        return {}
    meta = json.loads(path.read_text(encoding="utf-8"))
    codes: dict[str, int | None] = meta["exit_code_by_key"]
    return {mid: STATUS_BY_EXIT_CODE.get(code, "suspicious") for mid, code in codes.items()}


def run_module(module: Module, root: Path, max_children: int, verbose: bool, listed: set[str]) -> Outcome:
    """Mutate one module in its workspace and read back what became of each mutant."""
    workspace = prepare_workspace(module, root)
    mutmut = Path(sys.executable).parent / "mutmut"
    env = {**os.environ, "PATH": f"{mutmut.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    started = time.monotonic()
    log_path = workspace / "mutmut.log"
    with log_path.open("w", encoding="utf-8") as log:
        done = subprocess.run(
            [str(mutmut), "run", "--max-children", str(max_children)],
            cwd=workspace,
            env=env,
            stdout=None if verbose else log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    seconds = time.monotonic() - started
    log_text = log_path.read_text(encoding="utf-8", errors="replace")
    statuses = statuses_after(done.returncode, log_text, read_statuses(workspace, module))
    if statuses is None:
        reason = f"mutmut exited {done.returncode}: {failure(log_text)} (whole log: {log_path})"
        return Outcome(module=module, statuses={}, seconds=seconds, error=reason)
    # A listed mutant that a test kills is reported by check_equivalents, and counted as killed.
    equivalent = frozenset(m for m in listed & statuses.keys() if statuses[m] not in KILLED)
    return Outcome(module=module, statuses=statuses, seconds=seconds, equivalent=equivalent)


def statuses_after(returncode: int, log: str, recorded: dict[str, str]) -> dict[str, str] | None:
    """The mutants' statuses once mutmut has exited, or None when it failed before testing them.

    mutmut stops early when none of the selected tests calls a mutated function in the test
    process (the module is reached only through a child process): every mutant is then untested.
    """
    if returncode == 0:
        return recorded
    if UNCOVERED in log and recorded:
        return dict.fromkeys(recorded, "no tests")
    return None


def failure(log: str) -> str:
    """The lines of mutmut's output that say why it stopped."""
    lines = [line.strip() for line in log.replace("\r", "\n").splitlines() if line.strip()]
    said = [line for line in lines if line.lower().startswith(("failed", "stopping", "error"))]
    return " / ".join(said or lines[-3:]) or "no output"


def locate(source: str, mutant_id: str, before: str) -> int:
    """The line of ``source`` that the mutant changes: ``before`` looked up inside its function."""
    mangled = mutant_id.rpartition(".")[2].partition("__mutmut_")[0]
    if mangled.startswith("x_"):
        owner, function = None, mangled[2:]
    else:
        _, owner, function = mangled.split("\u01c1")
    scope: list[ast.stmt] = ast.parse(source).body
    if owner is not None:
        scope = next((n.body for n in scope if isinstance(n, ast.ClassDef) and n.name == owner), [])
    node = next(
        (n for n in scope if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == function),
        None,
    )
    if node is None:
        return 0
    lines = source.splitlines()
    for number in range(node.lineno, (node.end_lineno or node.lineno) + 1):
        if lines[number - 1].strip() == before.strip():
            return number
    return node.lineno


def parse_diff(diff: str) -> tuple[str, str]:
    """The first removed and the first added line of a mutant's unified diff; a mutant that only
    deletes (an argument of a call, say) reads as ``REMOVED``."""
    body = [line for line in diff.splitlines() if not line.startswith(("---", "+++", "@@"))]
    before = next((line[1:] for line in body if line.startswith("-")), "")
    after = next((line[1:] for line in body if line.startswith("+")), REMOVED)
    return before, after


def describe(workspace: Path, module: Module, mutant_ids: Iterable[str]) -> dict[str, Change | None]:
    """The line each mutant changes, read from mutmut's generated file (None where it cannot say)."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    source = (REPO / module.path).read_text(encoding="utf-8")
    changes: dict[str, Change | None] = {}
    with contextlib.chdir(workspace):
        for mutant_id in mutant_ids:
            try:
                before, after = parse_diff(get_diff_for_mutant(mutant_id, path=module.path))
            except (FileNotFoundError, KeyError, ValueError):
                changes[mutant_id] = None
                continue
            changes[mutant_id] = Change(line=locate(source, mutant_id, before), before=before, after=after)
    return changes


def table(outcomes: Sequence[Outcome]) -> str:
    """The results as a Markdown table, one row per module."""
    head = (
        "| module | mutants | killed | survived | no tests | timeout/suspicious | equivalent "
        "| score | threshold | time |"
    )
    rows = [head, "|" + "---|" * 10]
    for o in outcomes:
        if o.error is not None:
            rows.append(
                f"| {o.module.path} | error | | | | | | | {o.module.threshold:g}% | {o.seconds:.0f} s |"
            )
            continue
        verdict = "" if o.passed else " FAIL"
        rows.append(
            f"| {o.module.path} | {o.total} | {o.count(KILLED)} | {o.count(SURVIVED)} | {o.count(NO_TESTS)} "
            f"| {o.count(ODD)} | {len(o.equivalent)} | {o.score:.1f}%{verdict} | {o.module.threshold:g}% "
            f"| {o.seconds:.0f} s |"
        )
    return "\n".join(rows)


def survivor_lines(outcome: Outcome, changes: Mapping[str, Change | None]) -> list[str]:
    """One line per surviving mutant: id, status, source line and the change."""
    lines = []
    for mutant_id in outcome.survivors():
        change = changes.get(mutant_id)
        where = f"{outcome.module.path}:{change.line}" if change else outcome.module.path
        what = f"{change.before.strip()}  ->  {change.after.strip()}" if change else "(no diff)"
        lines.append(f"{mutant_id} [{outcome.statuses[mutant_id]}] {where}: {what}")
    return lines


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.mutation.run",
        description="Mutate the declared core modules, print a score table and fail under a threshold.",
    )
    parser.add_argument(
        "--module", action="append", default=[], help="a declared module (path or dotted name); repeatable"
    )
    parser.add_argument("--list", action="store_true", help="print the declared modules and their tests")
    parser.add_argument("--show-survivors", action="store_true", help="print every surviving mutant")
    parser.add_argument("--verbose", action="store_true", help="show mutmut's own output, not only its log")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 1, help="mutants run at once")
    parser.add_argument("--workdir", type=Path, default=WORKDIR, help="where the workspaces go")
    parser.add_argument("--modules-file", type=Path, default=MODULES_FILE, help=argparse.SUPPRESS)
    parser.add_argument("--equivalent-file", type=Path, default=EQUIVALENT_FILE, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def record(outcome: Outcome, workspace: Path, listed: set[str], show: bool) -> dict[str, Change | None]:
    """Write the module's survivors and counts into its workspace, print its line, and return the
    changes of its survivors and of its listed equivalents (which the stale check reads)."""
    module = outcome.module
    wanted = set(outcome.survivors()) | {e for e in listed if module_of(e) == module.name}
    changes = describe(workspace, module, sorted(wanted & outcome.statuses.keys()))
    survivors = survivor_lines(outcome, changes)
    (workspace / "survivors.txt").write_text("".join(f"{s}\n" for s in survivors), encoding="utf-8")
    summary: dict[str, object] = {"path": module.path, "seconds": round(outcome.seconds, 1)}
    summary |= {"score": round(outcome.score, 1), **Counter(outcome.statuses.values())}
    (workspace / "result.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    listing = workspace / "survivors.txt"
    print(f"    {outcome.score:.1f}% killed in {outcome.seconds:.0f} s; survivors listed in {listing}")
    if show:
        print("".join(f"    {s}\n" for s in survivors), end="")
    return changes


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen modules; 0 when each reaches its threshold and the equivalent list is current."""
    args = parse_args(argv)
    try:
        declared = load_modules(args.modules_file)
        equivalents = load_equivalents(args.equivalent_file)
        chosen = select(declared, args.module)
        for eq in equivalents:
            module_of(eq.id)
    except (ConfigError, KeyError, tomllib.TOMLDecodeError) as error:
        print(f"mutation: {error}", file=sys.stderr)
        return 2
    if args.list:
        for m in declared:
            print(f"{m.path}  (threshold {m.threshold:g}%)  <- {' '.join(m.tests)}")
        return 0
    listed = {eq.id for eq in equivalents}
    outcomes: dict[str, Outcome] = {}
    changes: dict[str, Change | None] = {}
    for position, module in enumerate(chosen, 1):
        print(f"[{position}/{len(chosen)}] mutating {module.path} against {len(module.tests)} test path(s)")
        sys.stdout.flush()
        outcome = run_module(module, args.workdir, args.max_children, args.verbose, listed)
        if outcome.error is None:
            changes |= record(outcome, args.workdir / module.name, listed, args.show_survivors)
        else:
            print(f"    {outcome.error}")
        outcomes[module.name] = outcome
    print()
    print(table(list(outcomes.values())))
    problems = check_equivalents(equivalents, declared, outcomes, changes)
    for problem in problems:
        print(f"equivalent.toml: {problem}")
    failed = [o.module.path for o in outcomes.values() if not o.passed]
    if failed:
        print(f"under threshold or not run to the end: {', '.join(failed)}")
    return 1 if failed or problems else 0


if __name__ == "__main__":
    sys.exit(main())
