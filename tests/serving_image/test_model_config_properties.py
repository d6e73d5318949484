"""A model's config.yaml, in-process: the versions variants name, errors naming file and key, and reloads.

``reload_model_config`` runs on SIGHUP in the server; here it is called directly, so each rule of
a reload (a missing or empty file keeps the config in force, unless there was none) is proved
without a server process.
"""

import locale
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving_image.model_config import (
    ConfigError,
    FaultConfig,
    HeaderRoute,
    ModelConfig,
    ShadowConfig,
    VariantsConfig,
    load_model_config,
    reload_model_config,
)

VARIANTS = 'variants:\n  weights: {"1": 90, "2": 10}\n'


def write(model_dir: Path, text: str) -> Path:
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.yaml").write_text(text, encoding="utf-8")
    return model_dir


def exactly(text: str) -> str:
    """A ``pytest.raises`` pattern matching ``text`` and nothing else."""
    return "^" + re.escape(text) + "$"


@pytest.fixture
def ascii_locale() -> Iterator[None]:
    """A process whose locale encoding is ASCII, as on a machine with LANG unset."""
    saved = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")
    try:
        assert locale.getpreferredencoding(False) != "UTF-8", "the C locale should not be UTF-8"
        yield
    finally:
        locale.setlocale(locale.LC_CTYPE, saved)


# --- VariantsConfig.versions -------------------------------------------------------------------------------

ROUTE = HeaderRoute(header="x-segment", value="beta", version="3")


@pytest.mark.parametrize(
    ("extra", "versions"),
    [
        ({}, {"1", "2"}),
        ({"routes": (ROUTE,)}, {"1", "2", "3"}),
        ({"faults": {"4": FaultConfig(error_ratio=0.5)}}, {"1", "2", "4"}),
        ({"shadow": ShadowConfig(version="5", percent=10)}, {"1", "2", "5"}),
        (
            {
                "routes": (ROUTE,),
                "faults": {"4": FaultConfig()},
                "shadow": ShadowConfig(version="5", percent=1),
            },
            {"1", "2", "3", "4", "5"},
        ),
        # A version named twice is one version.
        (
            {"routes": (ROUTE.model_copy(update={"version": "2"}),), "faults": {"1": FaultConfig()}},
            {"1", "2"},
        ),
    ],
)
def test_versions_are_every_version_weights_routes_faults_and_shadow_name(
    extra: dict[str, object], versions: set[str]
) -> None:
    config = VariantsConfig.model_validate({"weights": {"1": 60, "2": 40}, **extra})
    assert config.versions() == versions, extra


@given(
    weighted=st.sets(st.sampled_from("abcdef"), min_size=1),
    routed=st.sets(st.sampled_from("cdefgh")),
    faulted=st.sets(st.sampled_from("efghij")),
    shadowed=st.none() | st.sampled_from("ghijkl"),
)
def test_versions_is_the_union_of_every_block(
    weighted: set[str], routed: set[str], faulted: set[str], shadowed: str | None
) -> None:
    first, *rest = sorted(weighted)
    config = VariantsConfig(
        weights={first: 100, **dict.fromkeys(rest, 0)},
        routes=tuple(HeaderRoute(header="x-v", value=v, version=v) for v in sorted(routed)),
        faults=dict.fromkeys(faulted, FaultConfig()),
        shadow=ShadowConfig(version=shadowed, percent=50) if shadowed else None,
    )
    expected = weighted | routed | faulted | ({shadowed} if shadowed else set())
    assert config.versions() == expected, config


# --- load_model_config --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind"),
    [("- 1\n- 2\n", "list"), ("just words\n", "str"), ("42\n", "int"), ("true\n", "bool")],
)
def test_a_top_level_that_is_not_a_mapping_names_the_file_and_the_type_found(
    tmp_path: Path, text: str, kind: str
) -> None:
    path = tmp_path / "config.yaml"
    with pytest.raises(
        ConfigError, match=exactly(f"{path}: expected a mapping at the top level, got {kind}")
    ):
        load_model_config(write(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('"": 1\n', "key '(top level)': Extra inputs are not permitted"),
        ("max_batch_size: 4097\n", "key 'max_batch_size': Input should be less than or equal to 4096"),
        ("variants:\n  weights: {}\n", "key 'variants': Value error, weights must sum to 100, got 0"),
        (
            'variants:\n  weights: {"1": 100}\n  shadow: {version: "2", percent: 0}\n',
            "key 'variants.shadow.percent': Input should be greater than 0",
        ),
    ],
)
def test_an_invalid_key_is_named_by_its_dotted_path(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "config.yaml"
    with pytest.raises(ConfigError, match=exactly(f"{path}: {message}")):
        load_model_config(write(tmp_path, text))


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n"])
def test_an_empty_file_at_start_up_means_the_defaults(tmp_path: Path, text: str) -> None:
    assert load_model_config(write(tmp_path, text)) == ModelConfig(), repr(text)


def test_a_config_that_cannot_be_read_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").mkdir()  # exists, but reading it fails whoever runs the test
    cannot_read = "^" + re.escape(f"{tmp_path / 'config.yaml'}: cannot read: [Errno 21] Is a directory")
    with pytest.raises(ConfigError, match=cannot_read):
        load_model_config(tmp_path)
    with pytest.raises(ConfigError, match=cannot_read):
        reload_model_config(tmp_path, ModelConfig())


@pytest.mark.usefixtures("ascii_locale")
@pytest.mark.parametrize("load", [load_model_config, lambda path: reload_model_config(path, ModelConfig())])
def test_config_files_are_read_as_utf8_whatever_the_locale(
    tmp_path: Path, load: Callable[[Path], ModelConfig]
) -> None:
    routes = "  routes: [{header: x-city, value: Zürich, version: '1'}]\n"
    write(tmp_path, "# Zürich\nvariants:\n  weights: {1: 100}\n" + routes)
    config = load(tmp_path)
    assert config.variants is not None and config.variants.routes[0].value == "Zürich", config


# --- reload_model_config ------------------------------------------------------------------------------------


def test_a_reload_reads_the_file_again(tmp_path: Path) -> None:
    current = load_model_config(write(tmp_path, VARIANTS))
    write(tmp_path, 'variants:\n  weights: {"1": 10, "2": 90}\n')
    reloaded = reload_model_config(tmp_path, current)
    assert reloaded.variants is not None and reloaded.variants.weights == {"1": 10, "2": 90}, reloaded


def test_a_model_that_never_had_a_config_may_still_have_none(tmp_path: Path) -> None:
    defaults = ModelConfig()
    assert reload_model_config(tmp_path, defaults) is defaults, "no file and no config: the defaults stay"


@pytest.mark.parametrize(
    "current",
    [ModelConfig(max_batch_size=8), ModelConfig(response_cache=True), ModelConfig(max_queue_size=1)],
)
def test_a_file_gone_on_reload_keeps_a_config_that_is_not_the_defaults(
    tmp_path: Path, current: ModelConfig
) -> None:
    path = tmp_path / "config.yaml"
    message = f"{path}: missing; keeping the current config (restore the file and reload)"
    with pytest.raises(ConfigError, match=exactly(message)):
        reload_model_config(tmp_path, current)


EMPTY_TEXTS = [
    "",
    "\n\n",
    "   \n\t\n",
    "# weights were here\n",
    "  # an indented comment\n\n# and another\n",
    "#\n",
]


@pytest.mark.parametrize("text", EMPTY_TEXTS)
@pytest.mark.parametrize("current", [ModelConfig(), ModelConfig(max_batch_size=8)])
def test_a_file_emptied_on_reload_is_an_error_whatever_the_current_config(
    tmp_path: Path, text: str, current: ModelConfig
) -> None:
    path = tmp_path / "config.yaml"
    message = f"{path}: empty; keeping the current config (write the whole file, then reload)"
    with pytest.raises(ConfigError, match=exactly(message)):
        reload_model_config(write(tmp_path, text), current)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])  # the file is rewritten each example
@given(
    lines=st.lists(
        st.tuples(st.sampled_from(["", " ", "\t", "  "]), st.sampled_from(["", "#", "# x: 1", "#variants:"])),
        max_size=6,
    )
)
def test_any_file_of_blank_and_comment_lines_is_empty_on_reload(
    tmp_path: Path, lines: list[tuple[str, str]]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("\n".join(indent + text for indent, text in lines), encoding="utf-8")
    with pytest.raises(ConfigError, match="empty; keeping the current config"):
        reload_model_config(tmp_path, ModelConfig())


@pytest.mark.parametrize(
    "text",
    [
        "max_batch_size: 8\n",
        "# a comment, then a key\nmax_batch_size: 8\n",
        "  max_batch_size: 8  # indented\n",
    ],
)
def test_a_file_with_one_key_is_not_empty_on_reload(tmp_path: Path, text: str) -> None:
    config = reload_model_config(write(tmp_path, text), ModelConfig())
    assert config == ModelConfig(max_batch_size=8), text


def test_an_invalid_file_on_reload_is_the_same_error_as_at_start_up(tmp_path: Path) -> None:
    write(tmp_path, 'variants:\n  weights: {"1": 30, "2": 30}\n')
    path = tmp_path / "config.yaml"
    with pytest.raises(
        ConfigError, match=exactly(f"{path}: key 'variants': Value error, weights must sum to 100, got 60")
    ):
        reload_model_config(tmp_path, ModelConfig(max_batch_size=8))
