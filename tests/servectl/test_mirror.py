"""`servectl mirror` against real registries: two `crane registry serve` processes on loopback play the
upstream and the in-region registry, and a loopback HTTP server plays an upstream Helm repository.

What this proves that a mock cannot: digests survive the copy (a multi-architecture index included), the
chart lands as an artifact Helm's media types describe, and a moved upstream tag is caught."""

import functools
import hashlib
import http.server
import io
import json
import os
import secrets
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from servectl.mirror import (
    DEFAULT_CRANE,
    HELM_CONFIG,
    HELM_CONTENT,
    chart_layout,
    mirror,
    stack_registries,
)
from stacks.artifacts import parse_lock
from tests.crane import serve_registry

ZERO = "sha256:" + "0" * 64
CRANE = Path(os.environ.get("CRANE_BIN", DEFAULT_CRANE))


@pytest.fixture(scope="module")
def crane() -> Path:
    assert CRANE.is_file(), f"no crane at {CRANE}: `make setup` builds the pinned crane"
    return CRANE


@pytest.fixture(scope="module")
def upstream(crane: Path) -> Iterator[str]:
    yield from serve_registry(crane)


@pytest.fixture(scope="module")
def region(crane: Path) -> Iterator[str]:
    yield from serve_registry(crane)


@pytest.fixture(scope="module")
def helm_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A static Helm repository (index.yaml + archives) served over HTTP on loopback."""
    root = tmp_path_factory.mktemp("helm-repo")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *_: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/charts", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def run_crane(crane: Path, *args: str) -> str:
    done = subprocess.run([str(crane), *args], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"crane {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


def push_random_index(crane: Path, tmp: Path, ref: str) -> str:
    """Push a two-platform index of random single-layer images to `ref`; return its digest."""
    children = []
    for arch in ("amd64", "arm64"):
        layer = tmp / f"layer-{arch}-{secrets.token_hex(4)}.tar"
        with tarfile.open(layer, "w") as tar:
            data = secrets.token_bytes(256)
            info = tarfile.TarInfo(f"payload-{arch}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        child = f"{ref}-{arch}"
        run_crane(crane, "append", "--oci-empty-base", "-f", str(layer), "-t", child)
        run_crane(crane, "mutate", "--set-platform", f"linux/{arch}", child)
        children.append(child)
    run_crane(crane, "index", "append", *[a for c in children for a in ("-m", c)], "-t", ref)
    return run_crane(crane, "digest", ref)


def publish_chart(root: Path, name: str, version: str, *, wrong_digest: bool = False) -> bytes:
    """Write a chart archive and an index.yaml listing it (optionally with a digest that does not match)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        chart_yaml = yaml.safe_dump({"apiVersion": "v2", "name": name, "version": version}).encode()
        info = tarfile.TarInfo(f"{name}/Chart.yaml")
        info.size = len(chart_yaml)
        tar.addfile(info, io.BytesIO(chart_yaml))
    archive = buf.getvalue()
    (root / "charts").mkdir(exist_ok=True)
    (root / "charts" / f"{name}-{version}.tgz").write_bytes(archive)
    digest = hashlib.sha256(archive + (b"x" if wrong_digest else b"")).hexdigest()
    entry = {"name": name, "version": version, "digest": digest, "urls": [f"{name}-{version}.tgz"]}
    (root / "charts" / "index.yaml").write_text(
        yaml.safe_dump({"apiVersion": "v1", "entries": {name: [entry]}})
    )
    return archive


@dataclass
class World:
    lock: Path
    image_ref: str
    image_digest: str
    chart_name: str


@pytest.fixture
def world(
    crane: Path, upstream: str, helm_repo: tuple[str, Path], tmp_path: Path, request: pytest.FixtureRequest
) -> World:
    """A fresh upstream image and chart (names unique to the test) and a lock naming both, unrecorded."""
    suffix = secrets.token_hex(3)
    repo = f"{upstream}/team/app-{suffix}"
    digest = push_random_index(crane, tmp_path, f"{repo}:1.0")
    url, root = helm_repo
    chart = f"demo-{suffix}"
    publish_chart(root, chart, "0.1.0+build.1")
    lock = {
        "images": {"app": {"source": repo, "tag": "1.0", "digest": ZERO, "recorded": False}},
        "charts": {
            "demo": {
                "source": url,
                "name": chart,
                "version": "0.1.0+build.1",
                "digest": ZERO,
                "recorded": False,
            }
        },
    }
    path = tmp_path / "artifacts.lock.json"
    path.write_text(json.dumps(lock, indent=2) + "\n")
    return World(path, f"{repo}:1.0", digest, chart)


def run_mirror(world: World, region: str, crane: Path, *extra: str) -> Result:
    args = [
        "--stack",
        "eu-prod",
        "--registry-override",
        region,
        "--lock",
        str(world.lock),
        "--crane",
        str(crane),
    ]
    return CliRunner().invoke(mirror, [*args, *extra])


def locked(world: World) -> dict[str, dict[str, object]]:
    lock = parse_lock(json.loads(world.lock.read_text()))
    return {
        "app": {"digest": lock.image("app").digest, "recorded": lock.image("app").recorded},
        "demo": {"digest": lock.chart("demo").digest, "recorded": lock.chart("demo").recorded},
    }


@pytest.mark.slow
def test_unrecorded_entries_fail_without_record_and_copy_nothing(
    world: World, region: str, crane: Path
) -> None:
    result = run_mirror(world, region, crane)
    assert result.exit_code == 1, result.output
    assert "images.app: never recorded" in result.output and "charts.demo: never recorded" in result.output
    dest = f"{region}/mirror/team/{world.image_ref.split('/team/')[1]}"
    probe = subprocess.run(
        [str(crane), "digest", dest], capture_output=True, text=True, timeout=60, check=False
    )
    assert probe.returncode != 0, f"nothing may be copied before the digest is recorded: {probe.stdout}"


@pytest.mark.slow
def test_record_copies_by_digest_and_writes_the_lock(world: World, region: str, crane: Path) -> None:
    result = run_mirror(world, region, crane, "--record")
    assert result.exit_code == 0, result.output
    dest = f"{region}/mirror/team/{world.image_ref.split('/team/')[1]}"
    assert run_crane(crane, "digest", dest) == world.image_digest, "the index digest must survive the copy"
    state = locked(world)
    assert state["app"] == {"digest": world.image_digest, "recorded": True}, state
    chart_ref = f"{region}/mirror/charts/{world.chart_name}:0.1.0_build.1"
    assert state["demo"] == {"digest": run_crane(crane, "digest", chart_ref), "recorded": True}, state
    manifest = json.loads(run_crane(crane, "manifest", chart_ref))
    assert manifest["config"]["mediaType"] == HELM_CONFIG, manifest
    assert [layer["mediaType"] for layer in manifest["layers"]] == [HELM_CONTENT], manifest
    # A second run without --record verifies the pinned digests and finds the copies in place.
    again = run_mirror(world, region, crane)
    assert again.exit_code == 0, again.output
    assert again.output.count("already at") == 2, again.output


@pytest.mark.slow
def test_a_moved_upstream_tag_fails_without_record(
    world: World, region: str, crane: Path, tmp_path: Path
) -> None:
    assert run_mirror(world, region, crane, "--record").exit_code == 0
    moved = push_random_index(crane, tmp_path, world.image_ref)
    assert moved != world.image_digest
    result = run_mirror(world, region, crane)
    assert result.exit_code == 1, result.output
    assert f"images.app: the lock pins {world.image_digest} but the source is now {moved}" in result.output
    assert locked(world)["app"]["digest"] == world.image_digest, "a failed check must not rewrite the lock"


@pytest.mark.slow
def test_a_chart_archive_that_does_not_match_its_index_fails(
    world: World, region: str, crane: Path, helm_repo: tuple[str, Path]
) -> None:
    publish_chart(helm_repo[1], world.chart_name, "0.1.0+build.1", wrong_digest=True)
    result = run_mirror(world, region, crane, "--record")
    assert result.exit_code == 1, result.output
    assert "charts.demo: " in result.output and "index.yaml says" in result.output, result.output
    state = locked(world)
    assert state["demo"]["recorded"] is False and state["app"]["recorded"] is True, state


@pytest.mark.slow
def test_dry_run_copies_and_writes_nothing(world: World, region: str, crane: Path) -> None:
    before = world.lock.read_text()
    result = run_mirror(world, region, crane, "--record", "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.output.count("would copy") == 2, result.output
    assert world.lock.read_text() == before, "a dry run must not write the lock"


def test_chart_artifact_digest_is_reproducible(tmp_path: Path) -> None:
    archive = publish_chart(tmp_path, "demo", "1.0.0")
    first = chart_layout(archive, "demo", tmp_path / "a")
    second = chart_layout(archive, "demo", tmp_path / "b")
    assert first == second, "the lock can only pin a chart digest that does not change between runs"


def test_stack_registries_are_the_stack_regions_ecr() -> None:
    account = "345678901234"
    assert stack_registries("eu-prod") == [
        f"{account}.dkr.ecr.eu-central-1.amazonaws.com/eu-prod",
        f"{account}.dkr.ecr.eu-west-1.amazonaws.com/eu-prod",
    ], "the infra layer namespaces the stack's repositories by the stack"
    assert stack_registries("onprem-ae") == ["registry.dc1.example.ae"], (
        "on premises: the in-country registry"
    )
