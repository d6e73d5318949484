"""The deploy runner's Dockerfile (stacks/runner/Dockerfile), without a container engine: parsed with
dockerfile-parse and checked against the versions the project pins elsewhere, and its download and plugin
steps run as processes, with stand-ins for curl and pulumi, to show what they install and that a tampered
download stops the build."""

import hashlib
import io
import os
import re
import shlex
import shutil
import subprocess
import tarfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from dockerfile_parse import DockerfileParser
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from stacks.settings import SUPPORTED_KUBERNETES_VERSIONS

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = ROOT / "stacks" / "runner" / "Dockerfile"
CONSTRAINTS = ROOT / "constraints.txt"
PINNED = re.compile(r"[a-z0-9]+(?:[._/-][a-z0-9]+)*:[\w][\w.-]*@sha256:(?P<digest>[0-9a-f]{64})")
"""A base image by name, tag and digest, with no registry host: Docker Hub's official images."""
JOB_PACKAGES = ("ca-certificates", "curl", "git", "jq", "make", "libicu72", "libkrb5-3", "libssl3", "zlib1g")
"""Debian packages the jobs and the runner agent use, in the base every stage shares."""
REGISTRY_HOSTS = ("docker.io", "public.ecr.aws", "ghcr.io", "quay.io", "gcr.io", "registry.k8s.io",
                  "mcr.microsoft.com", ".dkr.ecr.")  # fmt: skip


@dataclass(frozen=True)
class Stage:
    """One build stage: its name, what it starts from, and its instructions."""

    name: str
    base: str
    items: list[dict[str, str]]

    def values(self, instruction: str) -> list[str]:
        return [item["value"] for item in self.items if item["instruction"] == instruction]

    def args(self) -> dict[str, str]:
        """The stage's ARG defaults."""
        pairs = (value.split("=", 1) for value in self.values("ARG"))
        return {pair[0]: pair[1] if len(pair) > 1 else "" for pair in pairs}

    def run(self, needle: str) -> str:
        """The one RUN command of the stage that contains `needle`."""
        found = [value for value in self.values("RUN") if needle in value]
        assert len(found) == 1, f"{self.name}: expected one RUN with {needle!r}, found {len(found)}"
        return found[0]


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    parser = DockerfileParser(path=str(DOCKERFILE))
    assert parser.structure, "the Dockerfile must parse into instructions"
    found: dict[str, Stage] = {}
    for item in parser.structure:
        if item["instruction"] == "FROM":
            base, _, name = item["value"].partition(" AS ")
            found[name.strip()] = Stage(name.strip(), base.strip(), [])
        elif item["instruction"] != "COMMENT":
            assert found, f"{item['instruction']} before the first FROM"
            list(found.values())[-1].items.append(item)
    return found


def expand(value: str, known: dict[str, str]) -> str:
    """Docker's `${NAME}` and `$NAME` substitution in ENV values, for the names known so far."""
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: known.get(m[1] or m[2], m[0]), value)


def environment(stages: dict[str, Stage], name: str, overrides: dict[str, str]) -> dict[str, str]:
    """What a RUN of the stage sees: inherited ENV, the stage's ARG defaults (or overrides), its ENV."""
    stage = stages[name]
    known = environment(stages, stage.base, overrides) if stage.base in stages else {}
    known.update({key: overrides.get(key, value) for key, value in stage.args().items()})
    for value in stage.values("ENV"):
        for pair in shlex.split(value):
            key, _, raw = pair.partition("=")
            known[key] = overrides.get(key, expand(raw, known))
    return known


def workflow_env() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / ".github" / "workflows" / "stack.yml").read_text())["env"])


def pinned(package: str, constraints: str | None = None) -> str:
    text = constraints if constraints is not None else CONSTRAINTS.read_text()
    found = re.search(rf"^{package}==(\S+)$", text, re.MULTILINE)
    assert found, f"constraints.txt pins no {package}"
    return found.group(1)


def test_stages(stages: dict[str, Stage]) -> None:
    assert list(stages) == ["opa", "base", "venv", "tools", "runner"], (
        f"a build stage per tool chain and a final runner stage: {list(stages)}"
    )
    for name in ("venv", "tools", "runner"):
        assert stages[name].base == "base", f"{name} must start from the one pinned Python base"


def test_bases_are_pinned_by_digest(stages: dict[str, Stage]) -> None:
    bases = [stage.base for stage in stages.values() if stage.base not in stages]
    assert len(bases) == 2, f"two bases, Go for OPA and Python: {bases}"
    for base in bases:
        found = PINNED.fullmatch(base)
        assert found, f"{base}: name:tag@sha256:<digest>, no registry host"
        assert set(found["digest"]) != {"0"}, f"{base}: a placeholder digest"


def test_only_the_bases_name_a_registry(stages: dict[str, Stage]) -> None:
    assert len(stages) >= 2 and all(s.items for s in stages.values()), sorted(stages)
    for stage in stages.values():
        for item in stage.items:
            named = [host for host in REGISTRY_HOSTS if host in item["value"]]
            assert not named, f"{stage.name}: {item['instruction']} names a registry {named}: {item['value']}"


def test_no_latest(stages: dict[str, Stage]) -> None:
    assert len(stages) >= 2, sorted(stages)
    for stage in stages.values():
        assert "latest" not in stage.base
        for item in stage.items:
            assert "latest" not in item["value"].lower(), f"{stage.name}: unpinned {item['value']}"


def test_python_is_the_projects(stages: dict[str, Stage]) -> None:
    found = re.fullmatch(r"python:(\d+\.\d+)-\S+", stages["base"].base)
    assert found, f"the runner's base is a Python image: {stages['base'].base}"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    spec = SpecifierSet(pyproject["project"]["requires-python"])
    assert found[1] == "3.11" and Version(f"{found[1]}.0") in spec, (
        f"Python {found[1]} must satisfy the project's requires-python {spec}"
    )


def test_pulumi_cli_is_the_workflows_and_the_sdks(stages: dict[str, Stage]) -> None:
    image = stages["tools"].args()["PULUMI_VERSION"]
    assert image == workflow_env()["PULUMI_VERSION"], f"image {image}: the workflows pin another Pulumi"
    assert image == pinned("pulumi"), f"image {image}: constraints.txt pins the pulumi SDK {pinned('pulumi')}"


def plugin_install(stages: dict[str, Stage], tmp_path: Path, constraints: str) -> tuple[int, list[str]]:
    """The plugin step run for real with a stand-in pulumi; returns its exit code and the plugin calls."""
    stubs, calls = tmp_path / "stubs", tmp_path / "calls"
    stubs.mkdir()
    (stubs / "pulumi").write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    (stubs / "pulumi").chmod(0o755)
    (tmp_path / "constraints.txt").write_text(constraints)
    env = environment(stages, "tools", {"TOOLS": str(tmp_path / "tools")})
    env["PATH"] = f"{stubs}:{os.environ['PATH']}"
    command = stages["tools"].run("pulumi plugin install")
    result = subprocess.run(["/bin/sh", "-c", command], cwd=tmp_path, env=env, check=False, timeout=60)
    return result.returncode, calls.read_text().splitlines() if calls.exists() else []


def test_plugins_are_the_sdks_pins(stages: dict[str, Stage], tmp_path: Path) -> None:
    code, calls = plugin_install(stages, tmp_path, CONSTRAINTS.read_text())
    assert code == 0, calls
    assert calls == [
        f"plugin install resource aws v{pinned('pulumi_aws')}",
        f"plugin install resource kubernetes v{pinned('pulumi_kubernetes')}",
    ], f"the plugins must be the versions the SDK packages pin: {calls}"


def test_plugins_fail_without_a_pin(stages: dict[str, Stage], tmp_path: Path) -> None:
    without = "\n".join(line for line in CONSTRAINTS.read_text().splitlines() if "kubernetes==" not in line)
    code, calls = plugin_install(stages, tmp_path, without)
    assert code != 0 and calls == [], f"no pin, no plugin and no image: exit {code}, calls {calls}"


def test_plugins_are_where_the_runner_looks(stages: dict[str, Stage]) -> None:
    tools = environment(stages, "tools", {})
    runner = environment(stages, "runner", {})
    assert tools["PULUMI_HOME"] == runner["PULUMI_HOME"], (
        "the plugins are installed under the final PULUMI_HOME"
    )
    copies = " ".join(stages["runner"].values("COPY"))
    assert f"--from=tools --chown=runner:runner {runner['PULUMI_HOME']} {runner['PULUMI_HOME']}" in copies, (
        "the plugins reach the final image, writable by its user (Pulumi keeps its workspace there)"
    )


def test_opa_is_the_gates(stages: dict[str, Stage]) -> None:
    policy = (ROOT / "mk" / "policy.mk").read_text()
    wanted = re.search(r"^OPA_VERSION := (\S+)$", policy, re.MULTILINE)
    assert wanted, "mk/policy.mk pins no OPA_VERSION"
    assert stages["opa"].args()["OPA_VERSION"] == wanted[1], "the image's OPA must be the gate's"
    assert stages["opa"].base.startswith("golang:"), "OPA is built from its Go module in a Go stage"
    assert "github.com/open-policy-agent/opa@${OPA_VERSION}" in stages["opa"].run("go install")
    assert "--from=opa /out/opa ${TOOLS}/bin/opa" in " ".join(stages["runner"].values("COPY"))


def test_kubectl_speaks_to_every_supported_cluster(stages: dict[str, Stage]) -> None:
    """kubectl supports control planes one minor version older or newer than itself."""
    found = re.fullmatch(r"v1\.(\d+)\.\d+", stages["tools"].args()["KUBECTL_VERSION"])
    assert found, stages["tools"].args()["KUBECTL_VERSION"]
    for version in SUPPORTED_KUBERNETES_VERSIONS:
        assert abs(int(found[1]) - int(version.split(".")[1])) <= 1, f"kubectl 1.{found[1]} vs EKS {version}"


def curl_stub(stubs: Path, served: Path) -> None:
    """A curl that answers each URL with the file of that name in `served`."""
    stubs.mkdir(exist_ok=True)
    script = f"""#!/bin/sh
out=""; url=""
while [ $# -gt 0 ]; do
  case "$1" in -fsSLo|-o) out=$2; shift ;; -*) ;; *) url=$1 ;; esac
  shift
done
cp "{served}/$(basename "$url")" "${{out:-$(basename "$url")}}"
"""
    (stubs / "curl").write_text(script)
    (stubs / "curl").chmod(0o755)


def serve_pulumi(served: Path, version: str, tamper: bool) -> None:
    archive = f"pulumi-v{version}-linux-x64.tar.gz"
    binary = f"#!/bin/sh\necho v{version}\n".encode()
    with tarfile.open(served / archive, "w:gz") as tar:
        info = tarfile.TarInfo("pulumi/pulumi")
        info.size, info.mode = len(binary), 0o755
        tar.addfile(info, io.BytesIO(binary))
    digest = hashlib.sha256((served / archive).read_bytes() + (b"x" if tamper else b"")).hexdigest()
    other = hashlib.sha256(b"another platform").hexdigest()
    (served / f"pulumi-{version}-checksums.txt").write_text(
        f"{other}  pulumi-v{version}-darwin-arm64.tar.gz\n{digest}  {archive}\n"
    )


def serve_kubectl(served: Path, version: str, tamper: bool) -> None:
    binary = b"#!/bin/sh\necho kubectl\n"
    (served / "kubectl").write_bytes(binary)
    (served / "kubectl.sha256").write_text(hashlib.sha256(binary + (b"x" if tamper else b"")).hexdigest())


DOWNLOADS = {
    "pulumi": ("pulumi-v${PULUMI_VERSION}-linux-x64.tar.gz", "PULUMI_VERSION", serve_pulumi, "pulumi/pulumi"),
    "kubectl": ("kubectl.sha256", "KUBECTL_VERSION", serve_kubectl, "bin/kubectl"),
}


@pytest.mark.parametrize("tamper", [False, True], ids=["as-published", "tampered"])
@pytest.mark.parametrize("tool", sorted(DOWNLOADS))
def test_downloads_are_checked_before_install(
    stages: dict[str, Stage], tmp_path: Path, tool: str, tamper: bool
) -> None:
    needle, version_arg, serve, installed = DOWNLOADS[tool]
    served, work, tools = tmp_path / "served", tmp_path / "work", tmp_path / "tools"
    served.mkdir()
    work.mkdir()
    env = environment(stages, "tools", {"TOOLS": str(tools)})
    serve(served, env[version_arg].removeprefix("v"), tamper)
    curl_stub(tmp_path / "stubs", served)
    env["PATH"] = f"{tmp_path / 'stubs'}:{os.environ['PATH']}"
    result = subprocess.run(["/bin/sh", "-c", stages["tools"].run(needle)], cwd=work, env=env, check=False,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    if tamper:
        assert result.returncode != 0, f"{tool}: a download that fails its checksum must stop the build"
        assert not (tools / installed).exists(), f"{tool}: nothing is installed from a tampered download"
    else:
        assert result.returncode == 0, result.stdout + result.stderr
        assert os.access(tools / installed, os.X_OK), f"{tool} is installed at {tools / installed}"


def test_aws_cli_signature_is_checked(stages: dict[str, Stage]) -> None:
    """The AWS CLI's zip is verified against the AWS CLI team's key (fetching it needs a keyserver, so this
    step is read rather than run) at a pinned version."""
    command = stages["tools"].run("awscli-exe-linux-x86_64")
    args = stages["tools"].args()
    assert re.fullmatch(r"2\.\d+\.\d+", args["AWSCLI_VERSION"]), "the AWS CLI v2, at a pinned version"
    assert re.fullmatch(r"[0-9A-F]{40}", args["AWSCLI_KEY"]), "the key by its full fingerprint"
    assert '--recv-keys "${AWSCLI_KEY}"' in command and "VALIDSIG .*${AWSCLI_KEY}" in command, command
    assert command.index("--verify") < command.index("./aws/install"), "verified before it is installed"


def test_venv_is_the_constraints_from_wheels(stages: dict[str, Stage]) -> None:
    command = stages["venv"].run("--requirement constraints.txt")
    assert "--only-binary=:all:" in command, "no package is compiled in the image"
    setuptools = stages["venv"].args()["SETUPTOOLS_VERSION"]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    backend = next(
        r for r in map(Requirement, pyproject["build-system"]["requires"]) if r.name == "setuptools"
    )
    assert Version(setuptools) in backend.specifier, f"setuptools {setuptools} must satisfy {backend}"
    assert Version(setuptools) >= Version("70.1"), "setuptools builds the editable wheel without `wheel`"
    assert "--from=venv --chown=runner:runner /opt/venv /opt/venv" in " ".join(
        stages["runner"].values("COPY")
    )


def test_final_image_has_the_job_tools_and_no_build_tools(stages: dict[str, Stage]) -> None:
    base = " ".join(stages["base"].values("RUN"))
    for package in JOB_PACKAGES:
        assert f" {package} " in f" {base} ", f"the image lacks {package}"
    for package in ("gnupg", "unzip", "dirmngr"):
        assert package not in base, f"{package} is needed to build the image, not to run jobs"
    assert " ".join(stages["tools"].values("RUN")).count("gnupg") == 1, "gnupg stays in the tools stage"


def test_runs_as_non_root(stages: dict[str, Stage]) -> None:
    users = stages["runner"].values("USER")
    assert users and users[-1] not in ("root", "0") and not users[-1].startswith(("root:", "0:")), users
    created = stages["runner"].run("useradd")
    assert re.search(rf"\b{users[-1]}$", created.strip()), (
        f"USER {users[-1]} must be the user created: {created}"
    )


def test_final_environment(stages: dict[str, Stage]) -> None:
    env = environment(stages, "runner", {})
    assert env["PULUMI_SKIP_UPDATE_CHECK"] in ("1", "true"), env
    assert env["PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION"] == "true", "a job never downloads a plugin"
    assert env["PIP_NO_INDEX"] == "1", "a job never reaches a package index"
    assert env["RUNNER_VENV"] == workflow_env()["RUNNER_VENV"], "the workflows look for the venv there"
    assert env["OPA_BIN"] == "/opt/tools/bin/opa", "servectl's policy gate finds the image's OPA"
    for directory in ("/opt/tools/bin", "/opt/tools/pulumi"):
        assert directory in env["PATH"].split(":"), f"{directory} must be on PATH: {env['PATH']}"


def test_build_checks_what_the_workflows_check(stages: dict[str, Stage]) -> None:
    """A tool the runner jobs' image check asks for is run by the build's last step, so a broken image
    fails its build rather than a deploy."""
    stack = yaml.safe_load((ROOT / ".github" / "workflows" / "stack.yml").read_text())
    check = next(s for s in stack["jobs"]["platform"]["steps"] if s.get("name") == "Check the runner image")
    final = stages["runner"].values("RUN")[-1]
    assert len(check["env"]["TOOLS"].split()) >= 2, f"the image check names no tools: {check['env']}"
    for tool in check["env"]["TOOLS"].split():
        assert re.search(rf"(^|&& ){tool} ", final), f"the build does not run {tool}: {final}"
    for module in ("pulumi", "pulumi_aws", "pulumi_kubernetes"):
        assert module in final, f"the build does not import {module} from the virtualenv"


def test_dockerfile_is_in_the_build_context() -> None:
    """The image is built from the repository root; everything it copies is there."""
    copied = [line.split()[1] for line in DOCKERFILE.read_text().splitlines() if line.startswith("COPY ") and
              "--from" not in line]  # fmt: skip
    assert copied, "the image copies constraints.txt"
    for path in copied:
        assert (ROOT / path).is_file(), f"COPY {path}: not in the repository root"
    assert shutil.which("sh"), "the RUN steps are run with /bin/sh, as Docker does"
