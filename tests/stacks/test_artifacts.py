import copy
from pathlib import Path
from typing import Any

import pytest

from stacks.artifacts import (
    CHART_PREFIX,
    MIRROR_PREFIX,
    LockError,
    ecr_registry,
    load_lock,
    parse_lock,
)

DIGEST = "sha256:" + "ab" * 32
VALID: dict[str, Any] = {
    "images": {
        "pilot": {"source": "docker.io/istio/pilot", "tag": "1.30.8", "digest": DIGEST, "recorded": True},
    },
    "charts": {
        "istiod": {
            "source": "https://istio-release.storage.googleapis.com/charts",
            "name": "istiod",
            "version": "1.30.8",
            "digest": DIGEST,
            "recorded": False,
        },
    },
}
REGISTRY = "123456789012.dkr.ecr.eu-central-1.amazonaws.com"


def with_change(path: str, value: object) -> dict[str, Any]:
    raw = copy.deepcopy(VALID)
    *parents, last = path.split(".")
    node = raw
    for part in parents:
        node = node[part]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return raw


def test_image_ref_is_the_in_region_copy_by_digest() -> None:
    image = parse_lock(VALID).image("pilot")
    assert image.repository == f"{MIRROR_PREFIX}/istio/pilot", "upstream path without its host, under mirror/"
    assert image.ref(REGISTRY) == f"{REGISTRY}/mirror/istio/pilot@{DIGEST}", image.ref(REGISTRY)


def test_chart_oci_reference_and_tag() -> None:
    chart = parse_lock(VALID).chart("istiod")
    assert chart.oci(REGISTRY) == f"oci://{REGISTRY}/{CHART_PREFIX}/istiod", chart.oci(REGISTRY)
    assert chart.tag == "1.30.8"
    build = parse_lock(with_change("charts.istiod.version", "1.0.0+build.7")).chart("istiod")
    assert build.tag == "1.0.0_build.7", "OCI tags cannot hold `+`; Helm writes `_`"


def test_unrecorded_lists_entries_the_mirror_has_not_verified() -> None:
    assert parse_lock(VALID).unrecorded() == ["charts.istiod"]


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("images.pilot.digest", "sha256:abc", "not sha256:<64 hex digits>"),
        ("images.pilot.digest", "md5:" + "ab" * 32, "not sha256"),
        ("images.pilot.digest", "sha256:" + "AB" * 32, "not sha256"),
        ("images.pilot.recorded", "yes", "recorded: must be a bool"),
        ("images.pilot.tag", None, "tag: must be a str"),
        ("images.pilot.source", "pilot", "names no registry host"),
        ("charts.istiod.name", None, "name: must be a str"),
        ("charts.istiod.digest", None, "digest: must be a str"),
    ],
)
def test_malformed_entries_are_refused_with_their_key(path: str, value: object, message: str) -> None:
    section, key, _ = path.split(".", 2)
    with pytest.raises(LockError, match=message) as info:
        parse_lock(with_change(path, value), "lock.json")
    assert f"lock.json: {section}.{key}" in str(info.value), f"error must name the entry: {info.value}"


def test_a_lock_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(LockError, match="must be a JSON object"):
        parse_lock([], "lock.json")


def test_unknown_entries_raise() -> None:
    lock = parse_lock(VALID)
    with pytest.raises(LockError, match=r"images\.nope: no such entry"):
        lock.image("nope")
    with pytest.raises(LockError, match=r"charts\.nope: no such entry"):
        lock.chart("nope")


def test_unreadable_lock_file(tmp_path: Path) -> None:
    bad = tmp_path / "lock.json"
    bad.write_text("{not json")
    with pytest.raises(LockError, match=r"lock\.json: cannot read it"):
        load_lock(bad)


def test_ecr_registry_host() -> None:
    assert ecr_registry("123456789012", "me-central-1") == "123456789012.dkr.ecr.me-central-1.amazonaws.com"


def test_shipped_lock_parses_with_distinct_repositories() -> None:
    lock = load_lock()
    assert lock.images and lock.charts, "the lock lists the platform's images and charts"
    repositories = [i.repository for i in lock.images.values()] + [c.repository for c in lock.charts.values()]
    duplicates = {r for r in repositories if repositories.count(r) > 1}
    assert not duplicates, f"two entries would share a repository: {duplicates}"


def test_shipped_charts_are_fetched_over_tls() -> None:
    plain = [k for k, c in load_lock().charts.items() if not c.source.startswith("https://")]
    assert not plain, f"charts fetched without TLS could be swapped in transit: {plain}"
