"""`servectl mirror`: copy every pinned chart and image into each region registry of a stack, by digest.

Images go with `crane copy SOURCE@DIGEST DEST:TAG`, which keeps the digest (multi-architecture indexes
included). Charts live in HTTP Helm repositories, which crane cannot read, so the chart archive is fetched
here from the repository's `index.yaml`, checked against the sha256 the index publishes, wrapped as the
OCI artifact `helm push` would make (Helm's config and chart-content media types) in an OCI image layout,
and pushed with `crane push`. That keeps one pinned Go tool, built from its module, instead of building
all of Helm for two HTTP GETs and a push. The artifact carries no timestamp, so its manifest digest is the
same on every run: that digest is what the lock records for a chart.

Without `--record`, an entry whose source no longer has the locked digest, or that was never recorded,
fails; with it, the digests verified are written back to the lock file.
"""

import hashlib
import io
import json
import os
import re
import subprocess
import tarfile
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import yaml

from stacks.artifacts import LOCK_FILE, Chart, Image, LockError, ecr_registry, load_lock, parse_lock

REPO_DIR = Path(__file__).resolve().parents[1]
DEFAULT_CRANE = REPO_DIR / ".tools" / "bin" / "crane"
HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
HELM_CONTENT = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ECR_HOST = re.compile(r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com$")
_NOT_FOUND = ("MANIFEST_UNKNOWN", "NAME_UNKNOWN", "404 Not Found")


class MirrorError(Exception):
    """One entry could not be mirrored or verified; the message says why."""


@dataclass(frozen=True)
class Crane:
    """The pinned crane binary, run with a bounded time and a registry config of its own."""

    binary: Path
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 900) -> str:
        """Run crane; MirrorError with its last error line when it fails or overruns."""
        try:
            done = subprocess.run(
                [str(self.binary), *args],
                check=False,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=self.env,
            )
        except subprocess.TimeoutExpired as exc:
            raise MirrorError(f"crane {args[0]} {args[1]} took over {timeout:.0f}s") from exc
        if done.returncode != 0:
            lines = [line for line in done.stderr.splitlines() if line.strip()] or ["(no output)"]
            raise MirrorError(f"crane {args[0]} {args[1]}: {lines[-1]}")
        return done.stdout.strip()

    def digest(self, ref: str) -> str:
        """The digest `ref` resolves to."""
        return self.run("digest", ref, timeout=120)

    def digest_or_none(self, ref: str) -> str | None:
        """The digest `ref` resolves to, or None when the registry has no such tag or repository."""
        try:
            return self.digest(ref)
        except MirrorError as exc:
            if any(marker in str(exc) for marker in _NOT_FOUND):
                return None
            raise


def find_crane(explicit: Path | None) -> Path:
    """The crane binary: explicit, else $CRANE_BIN, else the project's .tools/bin/crane."""
    binary = explicit or Path(os.environ.get("CRANE_BIN", DEFAULT_CRANE))
    if not binary.is_file():
        raise click.ClickException(f"no crane at {binary}: run `make setup` (it builds the pinned crane)")
    return binary


def stack_registries(stack: str, root: Path = REPO_DIR) -> list[str]:
    """The in-region registry hosts of a stack: its regions' ECR, or the on-premises registry."""
    path = root / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        raise click.ClickException(f"no stack file {path.name}")
    config: dict[str, Any] = (yaml.safe_load(path.read_text()) or {}).get("config") or {}
    onprem = config.get("model-serving:onprem") or {}
    if onprem.get("registry"):
        return [str(onprem["registry"])]
    account = (config.get("model-serving:image") or {}).get("registryAccount")
    regions = [str(r["region"]) for r in config.get("model-serving:regions") or []]
    if not account or not regions:
        raise click.ClickException(
            f"{path.name}: needs image.registryAccount and regions (or --registry-override)"
        )
    # The infra layer namespaces every repository by the stack (stacks sharing an account never collide).
    return [f"{ecr_registry(str(account), region)}/{stack}" for region in regions]


def docker_config(hosts: list[str], directory: Path) -> dict[str, str]:
    """An environment whose DOCKER_CONFIG holds a fresh ECR token for each ECR host, plus the caller's own
    registry logins (upstream pulls keep their rate limits); nothing is written to the caller's config."""
    own = Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker")) / "config.json"
    config: dict[str, Any] = json.loads(own.read_text()) if own.is_file() else {}
    auths = dict(config.get("auths") or {})
    for registry in hosts:
        host = registry.split("/", 1)[0]
        match = ECR_HOST.match(host)
        if match:
            auths[host] = {"auth": ecr_token(match["account"], match["region"])}
    (directory / "config.json").write_text(json.dumps(config | {"auths": auths}))
    return os.environ | {"DOCKER_CONFIG": str(directory)}


def ecr_token(account: str, region: str) -> str:
    """The base64 `AWS:password` ECR hands out for an account's registry in a region."""
    import boto3

    data = boto3.client("ecr", region_name=region).get_authorization_token(registryIds=[account])
    return data["authorizationData"][0]["authorizationToken"]


def _get(url: str) -> bytes:
    if urllib.parse.urlsplit(url).scheme not in {"https", "http"}:
        raise MirrorError(f"{url}: only http(s) Helm repositories are supported")
    try:
        with urllib.request.urlopen(url, timeout=120) as response:  # noqa: S310 (scheme checked above)
            return bytes(response.read())
    except OSError as exc:
        raise MirrorError(f"GET {url}: {exc}") from exc


def fetch_chart(chart: Chart) -> bytes:
    """The chart archive from its Helm repository, verified against the digest its index publishes."""
    index = yaml.safe_load(_get(f"{chart.source.rstrip('/')}/index.yaml"))
    versions = (index or {}).get("entries", {}).get(chart.name) or []
    entry = next((v for v in versions if str(v.get("version")) == chart.version), None)
    if entry is None or not entry.get("urls"):
        raise MirrorError(f"{chart.source}: no chart {chart.name} {chart.version} in index.yaml")
    if not entry.get("digest"):
        raise MirrorError(f"{chart.source}: index.yaml gives no digest for {chart.name} {chart.version}")
    archive = _get(urllib.parse.urljoin(f"{chart.source.rstrip('/')}/", entry["urls"][0]))
    actual = hashlib.sha256(archive).hexdigest()
    if actual != entry["digest"]:
        raise MirrorError(
            f"{chart.name}-{chart.version}.tgz has sha256 {actual}, index.yaml says {entry['digest']}"
        )
    return archive


def chart_metadata(archive: bytes, name: str) -> dict[str, Any]:
    """Chart.yaml of the archive (Helm's OCI config is this metadata as JSON)."""
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        member = tar.extractfile(f"{name}/Chart.yaml")
        if member is None:
            raise MirrorError(f"chart archive {name} has no {name}/Chart.yaml")
        meta: dict[str, Any] = yaml.safe_load(member.read())
        return meta


def chart_layout(archive: bytes, name: str, directory: Path) -> str:
    """Write the chart as an OCI image layout in `directory`; return its manifest digest."""
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def blob(data: bytes, media_type: str) -> dict[str, Any]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}

    config = json.dumps(chart_metadata(archive, name), sort_keys=True, separators=(",", ":"), default=str)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": blob(config.encode(), HELM_CONFIG),
        "layers": [blob(archive, HELM_CONTENT)],
    }
    descriptor = blob(json.dumps(manifest, separators=(",", ":")).encode(), OCI_MANIFEST)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [descriptor],
    }
    (directory / "index.json").write_text(json.dumps(index))
    (directory / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    return str(descriptor["digest"])


@dataclass(frozen=True)
class Resolved:
    """An entry's current source digest and how to put it into a registry."""

    digest: str
    repository: str
    tag: str
    push: Callable[[str], None]


def resolve(entry: Image | Chart, crane: Crane, workdir: Path) -> Resolved:
    """Look the entry up at its source (for a chart: fetch, verify and lay it out as an OCI artifact)."""
    if isinstance(entry, Image):
        digest = crane.digest(f"{entry.source}:{entry.tag}")
        source = f"{entry.source}@{digest}"

        def copy(dest: str) -> None:
            crane.run("copy", source, dest)

        return Resolved(digest, entry.repository, entry.tag, copy)
    layout = workdir / entry.key
    digest = chart_layout(fetch_chart(entry), entry.name, layout)

    def push(dest: str) -> None:
        crane.run("push", str(layout), dest)

    return Resolved(digest, entry.repository, entry.tag, push)


def mirror_entry(
    where: str,
    entry: Image | Chart,
    crane: Crane,
    hosts: list[str],
    *,
    record: bool,
    dry_run: bool,
    workdir: Path,
) -> str:
    """Mirror one entry to every host and return the digest verified; MirrorError says what went wrong."""
    resolved = resolve(entry, crane, workdir)
    if not record and not entry.recorded:
        raise MirrorError(
            f"never recorded (source is at {resolved.digest}): run with --record to verify and pin it"
        )
    if not record and resolved.digest != entry.digest:
        raise MirrorError(f"the lock pins {entry.digest} but the source is now {resolved.digest}")
    for host in hosts:
        dest = f"{host}/{resolved.repository}:{resolved.tag}"
        present = crane.digest_or_none(dest)
        if present == resolved.digest:
            click.echo(f"{where}: {dest} already at {present}")
            continue
        if present is not None:
            raise MirrorError(f"{dest} holds {present}, not {resolved.digest}, and its tags are immutable")
        if dry_run:
            click.echo(f"{where}: would copy {resolved.digest} to {dest}")
            continue
        resolved.push(dest)
        landed = crane.digest(dest)
        if landed != resolved.digest:
            raise MirrorError(f"{dest} resolves to {landed} after the copy, expected {resolved.digest}")
        click.echo(f"{where}: copied {resolved.digest} to {dest}")
    return resolved.digest


def write_lock(path: Path, recorded: dict[str, str]) -> None:
    """Write verified digests (`images.K`/`charts.K` -> digest) back into the lock file, recorded=true."""
    raw = json.loads(path.read_text())
    for where, digest in recorded.items():
        section, key = where.split(".", 1)
        raw[section][key] |= {"digest": digest, "recorded": True}
    parse_lock(raw, path.name)  # never write a lock the stacks could not read
    path.write_text(json.dumps(raw, indent=2) + "\n")
    load_lock.cache_clear()


@click.command()
@click.option(
    "--stack", required=True, metavar="NAME", help="Stack whose region registries receive the copies."
)
@click.option("--record", is_flag=True, help="Pin the source's current digests in the lock file.")
@click.option("--dry-run", is_flag=True, help="Resolve and compare digests; copy nothing, write nothing.")
@click.option(
    "--registry-override",
    metavar="HOST",
    envvar="SERVECTL_MIRROR_REGISTRY",
    help="Copy to this registry instead of the stack's (e.g. a local test registry).",
)
@click.option(
    "--lock",
    "lock_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=LOCK_FILE,
    show_default=True,
    help="The lock file.",
)
@click.option("--crane", "crane_bin", type=click.Path(dir_okay=False, path_type=Path), help="crane binary.")
def mirror(
    stack: str,
    record: bool,
    dry_run: bool,
    registry_override: str | None,
    lock_path: Path,
    crane_bin: Path | None,
) -> None:
    """Copy every chart and image of the lock file into each region registry of a stack, by digest."""
    hosts = [registry_override] if registry_override else stack_registries(stack)
    try:
        lock = parse_lock(json.loads(lock_path.read_text()), lock_path.name)
    except (LockError, json.JSONDecodeError) as exc:
        raise click.ClickException(str(exc)) from exc
    entries: dict[str, Image | Chart] = {f"images.{k}": v for k, v in lock.images.items()}
    entries |= {f"charts.{k}": v for k, v in lock.charts.items()}
    failures, recorded = [], {}
    with tempfile.TemporaryDirectory(prefix="servectl-mirror-") as tmp:
        auth_dir = Path(tmp) / "docker"
        auth_dir.mkdir()
        crane = Crane(find_crane(crane_bin), docker_config(hosts, auth_dir))
        for where, entry in entries.items():
            try:
                digest = mirror_entry(
                    where, entry, crane, hosts, record=record, dry_run=dry_run, workdir=Path(tmp)
                )
            except MirrorError as exc:
                failures.append(f"{where}: {exc}")
                click.echo(f"{where}: FAILED: {exc}", err=True)
                continue
            if digest != entry.digest or not entry.recorded:
                recorded[where] = digest
    if record and recorded and not dry_run:
        write_lock(lock_path, recorded)
        click.echo(f"recorded {len(recorded)} digests in {lock_path}")
    if failures:
        raise click.ClickException(
            f"{len(failures)} of {len(entries)} entries failed:\n" + "\n".join(failures)
        )
    click.echo(f"{len(entries)} entries in {', '.join(hosts)}" + (" (dry run)" if dry_run else ""))
