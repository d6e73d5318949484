"""The mutation driver's arithmetic and bookkeeping: scores, thresholds, the equivalent list, workspaces.

Running mutmut itself takes minutes per module, so it is left to `make mutation`; these tests pin
what the driver decides from mutmut's results and what it hands mutmut.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import pytest
from mutmut.configuration import _load_config
from mutmut.stats import status_by_exit_code

from tests.mutation.run import (
    EQUIVALENT_FILE,
    MODULES_FILE,
    REMOVED,
    REPO,
    STATUS_BY_EXIT_CODE,
    UNCOVERED,
    Change,
    ConfigError,
    Equivalent,
    Module,
    Outcome,
    check_equivalents,
    failure,
    load_equivalents,
    load_modules,
    locate,
    module_of,
    mutmut_config,
    parse_diff,
    prepare_workspace,
    select,
    statuses_after,
    table,
)

VARIANTS = Module(
    path="serving_image/variants.py", tests=("tests/serving_image/test_variants.py",), threshold=90
)
FN = "serving_image.variants.x__bucket__mutmut_"
METHOD = "serving_image.variants.x\u01c1VariantRouter\u01c1choose__mutmut_"


def outcome(statuses: dict[str, str], equivalent: frozenset[str] = frozenset()) -> Outcome:
    return Outcome(module=VARIANTS, statuses=statuses, seconds=1.0, equivalent=equivalent)


def fates(**counts: int) -> dict[str, str]:
    """Mutant ids with the given number of each status (keyword = status with _ for space)."""
    statuses, n = {}, 0
    for status, count in counts.items():
        for _ in range(count):
            n += 1
            statuses[f"{FN}{n}"] = status.replace("_", " ")
    return statuses


@pytest.mark.parametrize(
    ("statuses", "equivalent", "score", "passed"),
    [
        (fates(killed=9, survived=1), 0, 90.0, True),
        (fates(killed=8, survived=2), 0, 80.0, False),
        # One listed equivalent among the survivors: 8 / (10 - 1).
        (fates(killed=8, survived=2), 1, 100.0 * 8 / 9, False),
        (fates(killed=9, survived=2), 1, 90.0, True),
        # Timeouts and "no tests" are not kills.
        (fates(killed=9, timeout=1), 0, 90.0, True),
        (fates(killed=8, timeout=1, no_tests=1), 0, 80.0, False),
        # A type checker's catch is a kill; a `pragma: no mutate` line is not a mutant at all.
        (fates(killed=8, caught_by_type_check=1, survived=1, skipped=5), 0, 90.0, True),
        # A run cut short fails even when every finished mutant was killed.
        (fates(killed=10, not_checked=1), 0, 100.0 * 10 / 11, False),
        (fates(killed=10, check_was_interrupted_by_user=0), 0, 100.0, True),
        ({}, 0, 100.0, True),
    ],
)
def test_score_is_killed_over_non_equivalent_mutants(
    statuses: dict[str, str], equivalent: int, score: float, passed: bool
) -> None:
    survivors = sorted(m for m, s in statuses.items() if s == "survived")
    result = outcome(statuses, frozenset(survivors[:equivalent]))
    assert result.score == pytest.approx(score), f"score of {sorted(statuses.values())}: {result.score}"
    assert result.passed is passed, f"a score of {result.score:.1f} against 90 must pass={passed}"


def test_equivalents_leave_the_survivor_list_and_count() -> None:
    statuses = fates(killed=1, survived=2, no_tests=1)
    result = outcome(statuses, frozenset({f"{FN}2"}))
    assert result.survivors() == [f"{FN}3", f"{FN}4"], "survivors: not killed, not listed as equivalent"
    assert result.count(frozenset({"survived"})) == 1, "the listed survivor is counted as equivalent only"


def test_our_exit_codes_are_mutmuts() -> None:
    theirs = {code: status_by_exit_code[code] for code in status_by_exit_code}
    assert dict(STATUS_BY_EXIT_CODE) == theirs, "the pinned mutmut maps its exit codes differently"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


MODULE_ENTRY = (
    '[[module]]\npath = "serving_image/variants.py"\ntests = ["tests/serving_image/test_variants.py"]\n'
)


@pytest.mark.parametrize(
    ("extra", "threshold", "error"),
    [
        ("threshold = 80\n", None, "needs a threshold_reason"),
        ('threshold = 80\nthreshold_reason = ""\n', None, "needs a threshold_reason"),
        ('threshold = 80\nthreshold_reason = "the rest is logging"\n', 80.0, None),
        ("threshold = 90\n", 90.0, None),
        ("", 90.0, None),
    ],
)
def test_a_lower_threshold_needs_a_reason(
    tmp_path: Path, extra: str, threshold: float | None, error: str | None
) -> None:
    path = write(tmp_path, "modules.toml", f"default_threshold = 90\n{MODULE_ENTRY}{extra}")
    if error is None:
        (module,) = load_modules(path)
        assert module.threshold == threshold, f"{extra!r}: threshold {module.threshold}"
    else:
        with pytest.raises(ConfigError, match=error):
            load_modules(path)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (f"default_threshold = 90\n{MODULE_ENTRY}{MODULE_ENTRY}", "declared twice"),
        (
            'default_threshold = 90\n[[module]]\npath = "serving_image/nothing.py"\ntests = []\n',
            "no such file",
        ),
    ],
)
def test_bad_module_lists_are_refused(tmp_path: Path, text: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        load_modules(write(tmp_path, "modules.toml", text))


REQUIRED = [
    "policies/normalize.py",  # the plan normalizer
    "policies/opa.py",  # the policy input's way to OPA
    "policies/pack/gate.py",  # the pack's input
    "loadtests/slo.py",  # the SLO gates
    "serving_image/variants.py",  # weights, sticky hashing, shadow sampling
    "serving_image/shadow.py",  # the shadow mirror
    "servectl/experiments/stats.py",
    "servectl/experiments/decision.py",
    "serving_image/tensors.py",
    "serving_image/rest_codec.py",
    "serving_image/model_config.py",
    "serving_image/settings.py",
    "stacks/config.py",
    "serving_image/object_store.py",  # async jobs' inputs and results by reference
]


def test_the_declared_list_covers_the_core_modules() -> None:
    declared = {m.path: m for m in load_modules(MODULES_FILE)}
    missing = [path for path in REQUIRED if path not in declared]
    assert not missing, f"modules.toml must declare {missing}"
    for module in declared.values():
        assert module.tests, f"{module.path}: no tests declared"
        for test in module.tests:
            assert (REPO / test.partition("::")[0]).is_file(), f"{module.path}: {test} does not exist"


def test_the_shipped_equivalent_list_is_well_formed() -> None:
    declared = {m.name for m in load_modules(MODULES_FILE)}
    for eq in load_equivalents(EQUIVALENT_FILE):
        assert module_of(eq.id) in declared, f"{eq.id}: not a mutant of a declared module"


@pytest.mark.parametrize(
    ("entry", "error"),
    [
        (f'id = "{FN}1"\nmutated = "x"\n', "lacks reason"),
        (f'id = "{FN}1"\nreason = "same"\n', "lacks mutated"),
        (f'id = "{FN}1"\nmutated = "x"\nreason = "  "\n', "lacks reason"),
    ],
)
def test_every_equivalent_needs_its_line_and_reason(tmp_path: Path, entry: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        load_equivalents(write(tmp_path, "equivalent.toml", f"[[mutant]]\n{entry}"))


def test_an_equivalent_listed_twice_is_refused(tmp_path: Path) -> None:
    entry = f'[[mutant]]\nid = "{FN}1"\nmutated = "x"\nreason = "same"\n'
    with pytest.raises(ConfigError, match="listed twice"):
        load_equivalents(write(tmp_path, "equivalent.toml", entry * 2))


@pytest.mark.parametrize(
    ("mutant_id", "module"),
    [
        (f"{FN}3", "serving_image.variants"),
        (f"{METHOD}12", "serving_image.variants"),
        ("servectl.experiments.stats.x_msprt__mutmut_1", "servectl.experiments.stats"),
    ],
)
def test_module_of_a_mutant_id(mutant_id: str, module: str) -> None:
    assert module_of(mutant_id) == module, mutant_id


def test_a_string_that_is_no_mutant_id_is_refused() -> None:
    with pytest.raises(ConfigError, match="not a mutmut mutant id"):
        module_of("serving_image.variants.choose")


LINE = "return x < y"


@pytest.mark.parametrize(
    ("statuses", "change", "listed_id", "problem"),
    [
        ({f"{FN}1": "survived"}, Change(line=3, before=LINE, after="return x <= y"), f"{FN}1", None),
        ({f"{FN}2": "survived"}, None, f"{FN}1", "no longer generates"),
        ({f"{FN}1": "survived"}, Change(line=3, before=LINE, after="return x > y"), f"{FN}1", "now writes"),
        (
            {f"{FN}1": "killed"},
            Change(line=3, before=LINE, after="return x <= y"),
            f"{FN}1",
            "a test kills it",
        ),
        ({}, None, "stacks.gone.x_f__mutmut_1", "not a declared module"),
    ],
)
def test_stale_equivalents_are_reported(
    statuses: dict[str, str], change: Change | None, listed_id: str, problem: str | None
) -> None:
    eq = Equivalent(id=listed_id, mutated="return x <= y", reason="same answers")
    ran = {VARIANTS.name: outcome(statuses)}
    problems = check_equivalents([eq], [VARIANTS], ran, {listed_id: change})
    if problem is None:
        assert problems == [], f"a current entry is not stale: {problems}"
    else:
        assert len(problems) == 1, f"one problem expected: {problems}"
        assert problem in problems[0], problems[0]
        assert problems[0].startswith(listed_id), f"the problem must name the mutant: {problems[0]}"


def test_equivalents_of_a_module_not_run_are_left_alone() -> None:
    eq = Equivalent(id=f"{FN}99", mutated="x", reason="same")
    assert check_equivalents([eq], [VARIANTS], {}, {}) == [], "only modules that ran can be checked"


def test_select_by_path_or_dotted_name_keeps_declared_order() -> None:
    other = Module(path="loadtests/slo.py", tests=("tests/loadtests/test_slo.py",), threshold=90)
    declared = [VARIANTS, other]
    assert select(declared, []) == declared, "no name: every module"
    assert select(declared, ["loadtests/slo.py", "serving_image.variants"]) == declared, "declared order"
    with pytest.raises(ConfigError, match=re.escape("not a declared module: serving_image/x.py")):
        select(declared, ["serving_image/x.py"])


SOURCE = '''"""doc"""


def _bucket(key):
    total = 0
    for byte in key:
        total = total * 31 + byte
    return total % 100


class VariantRouter:
    def choose(self, headers):
        if headers:
            return "2"
        return "1"
'''


@pytest.mark.parametrize(
    ("mutant_id", "before", "line"),
    [
        (f"{FN}1", "        total = total * 31 + byte", 7),
        (f"{FN}2", "    return total % 100", 8),
        (f"{METHOD}1", '            return "2"', 14),
        # A line not found in the function falls back to its def line.
        (f"{METHOD}2", "gone", 12),
        ("serving_image.variants.x_nothing__mutmut_1", "    return 1", 0),
    ],
)
def test_locate_finds_the_mutated_line_in_its_function(mutant_id: str, before: str, line: int) -> None:
    assert locate(SOURCE, mutant_id, before) == line, f"{mutant_id}: {before!r}"


@pytest.mark.parametrize(
    ("body", "change"),
    [
        ("-    return x < 1\n+    return x <= 1\n", ("    return x < 1", "    return x <= 1")),
        ("     f(\n-        a=1,\n         b=2,\n", ("        a=1,", REMOVED)),
    ],
)
def test_parse_diff_reads_the_first_change(body: str, change: tuple[str, str]) -> None:
    diff = f"--- a.py\n+++ a.py\n@@ -1,3 +1,3 @@\n def f(x):\n{body}"
    assert parse_diff(diff) == change, f"the change of {body!r}"


def test_mutmut_reads_the_config_the_driver_writes(tmp_path: Path) -> None:
    module = Module(path="loadtests/slo.py", tests=("tests/a.py", "tests/b.py::test_c"), threshold=90)
    write(tmp_path, "setup.cfg", mutmut_config(module))
    with contextlib.chdir(tmp_path):
        config = _load_config()
    assert config.source_paths == [Path("loadtests")], config.source_paths
    assert config.should_mutate("loadtests/slo.py"), "the module must be mutated"
    assert not config.should_mutate("loadtests/report.py"), "the rest of its package must not be"
    assert config.pytest_add_cli_args_test_selection == ["tests/a.py", "tests/b.py::test_c"], "its tests only"
    assert config.use_git_change_detection is False, "a fresh workspace has no earlier run to compare"


def test_a_workspace_copies_the_package_and_tests_and_links_the_rest(tmp_path: Path) -> None:
    workspace = prepare_workspace(VARIANTS, tmp_path)
    for name in ("serving_image", "tests", "pyproject.toml"):
        assert (workspace / name).resolve() == REPO / name, f"mutmut copies {name} from the workspace root"
        assert not (workspace / "mutants" / name).exists(), f"{name} must be left for mutmut to copy"
    for name in ("stacks", "loadtests", "Pulumi.yaml", "mk"):
        assert (workspace / "mutants" / name).resolve() == REPO / name, f"{name} linked for the tests to read"
    for name in (".venv", ".git", "reports"):
        assert not (workspace / "mutants" / name).exists(), f"{name} must not be linked"
    assert "only_mutate = serving_image/variants.py" in (workspace / "setup.cfg").read_text(), "its config"
    (workspace / "mutants" / "stale").write_text("left over", encoding="utf-8")
    assert not (prepare_workspace(VARIANTS, tmp_path) / "mutants" / "stale").exists(), (
        "every run starts fresh"
    )


def test_the_table_marks_failures_and_errors() -> None:
    good = outcome(fates(killed=9, survived=1))
    bad = Outcome(module=VARIANTS, statuses={}, seconds=3.0, error="mutmut exited 1")
    rows = table([good, outcome(fates(killed=1, survived=1)), bad]).splitlines()
    assert rows[0].startswith("| module | mutants | killed | survived |"), rows[0]
    assert rows[2] == "| serving_image/variants.py | 10 | 9 | 1 | 0 | 0 | 0 | 90.0% | 90% | 1 s |", rows[2]
    assert "50.0% FAIL" in rows[3], rows[3]
    assert "| error |" in rows[4], rows[4]


RECORDED = {f"{FN}1": "killed", f"{FN}2": "not checked"}


@pytest.mark.parametrize(
    ("returncode", "log", "recorded", "expected"),
    [
        (0, "", RECORDED, RECORDED),
        # Reached only through a child process: mutmut stops, and every mutant is untested.
        (1, f"Stopping early, because we {UNCOVERED}.", RECORDED, dict.fromkeys(RECORDED, "no tests")),
        (1, "Failed to run clean test", RECORDED, None),
        (1, f"Stopping early, because we {UNCOVERED}.", {}, None),
    ],
)
def test_statuses_after_mutmut_exits(
    returncode: int, log: str, recorded: dict[str, str], expected: dict[str, str] | None
) -> None:
    assert statuses_after(returncode, log, recorded) == expected, f"exit {returncode}, log {log!r}"


@pytest.mark.parametrize(
    ("log", "said"),
    [
        ("spin\r1/3\rRunning clean tests\nFailed to run clean test\n", "Failed to run clean test"),
        ("a\nb\nc\nd\n", "b / c / d"),
        ("", "no output"),
    ],
)
def test_failure_quotes_why_mutmut_stopped(log: str, said: str) -> None:
    assert failure(log) == said, repr(log)
