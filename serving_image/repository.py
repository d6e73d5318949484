"""The model repository in Triton's layout: ``<repo>/<model>/<version>/model.onnx``.

Every model is loaded up front, never in the request path, and warmed up at each batch size
its batcher can form before it counts as ready. A model or version that fails to load is
kept with its path and reason and marked not ready; the others still serve. On SIGHUP, version
directories that appeared since (or failed before) are loaded the same way, off the event loop
(``unloaded_versions``, ``load_version``), before the variants are re-read.
"""

import traceback
from dataclasses import dataclass, field
from pathlib import Path

from serving_image.access_log import log_event
from serving_image.model_config import ConfigError, ModelConfig, load_model_config, reload_model_config
from serving_image.runtime import ModelLoadError, OnnxModel, warm_up_sizes
from serving_image.variants import VariantRouter

MODEL_FILE = "model.onnx"
# Every batch size up to this one is warmed up; past it, the powers of two and the maximum.
WARM_UP_EVERY_SIZE_UP_TO = 64
# A logged traceback keeps its innermost frames and at most this many characters of their text;
# its message, logged apart, is cut too (a message may quote a whole input).
TRACEBACK_FRAMES = 20
TRACEBACK_CHARS = 4096
MESSAGE_CHARS = 1000


def failure_fields(error: BaseException) -> dict[str, str]:
    """The log fields of an unexpected exception that is caught and not raised: type, message, traceback.

    The traceback is bounded (the last ``TRACEBACK_FRAMES`` frames, the last ``TRACEBACK_CHARS``
    characters): its end, the frame that raised and the message, is what an operator needs.
    """
    text = "".join(traceback.format_exception(error, limit=-TRACEBACK_FRAMES))
    if len(text) > TRACEBACK_CHARS:
        text = "[...]\n" + text[-TRACEBACK_CHARS:]
    return {"error_type": type(error).__qualname__, "error": str(error)[:MESSAGE_CHARS], "traceback": text}


@dataclass(slots=True)
class ModelVersion:
    """One version directory and, when it loaded, its ONNX Runtime session."""

    model: str
    version: str
    path: Path
    runtime: OnnxModel | None = None
    error: str | None = None
    warm_up_problem: str | None = None
    """Why the version could not be warmed up (it still serves, cold), or None."""

    @property
    def ready(self) -> bool:
        """Loaded and able to serve."""
        return self.runtime is not None


@dataclass(slots=True)
class Model:
    """A model name with its versions, its config and the router that picks a version."""

    name: str
    path: Path
    config: ModelConfig = field(default_factory=ModelConfig)
    versions: dict[str, ModelVersion] = field(default_factory=dict)
    router: VariantRouter | None = None
    error: str | None = None

    @property
    def ready(self) -> bool:
        """Every version this model routes to is loaded."""
        if self.error is not None or self.router is None:
            return False
        return all(self.versions[version].ready for version in self.router.versions)


@dataclass(frozen=True, slots=True)
class LoadFailure:
    """What failed to load, where, and why: shown in logs and in the readiness answer."""

    model: str
    version: str
    path: str
    reason: str


class Repository:
    """All models of a repository directory, loaded."""

    def __init__(
        self,
        models: dict[str, Model],
        intra_op_threads: int = 1,
        warm_up_every_size_up_to: int = WARM_UP_EVERY_SIZE_UP_TO,
        scans_versions: bool = True,
    ) -> None:
        self.models = models
        self.intra_op_threads = intra_op_threads
        self.warm_up_every_size_up_to = warm_up_every_size_up_to
        self.scans_versions = scans_versions
        """Whether each model directory holds version directories to look for on SIGHUP (not so for
        ``load_one_version``, whose directory is the version itself)."""

    @classmethod
    def load(
        cls, root: Path, intra_op_threads: int, warm_up_every_size_up_to: int = WARM_UP_EVERY_SIZE_UP_TO
    ) -> "Repository":
        """Load and warm up every model under ``root``; failures are recorded, not raised."""
        if not root.is_dir():
            raise FileNotFoundError(f"model repository {root} is not a directory")
        models = {
            path.name: _load_model(path, intra_op_threads, warm_up_every_size_up_to)
            for path in sorted(root.iterdir())
            if path.is_dir() and not path.name.startswith(".")
        }
        return cls(models, intra_op_threads, warm_up_every_size_up_to)

    @classmethod
    def load_one_version(
        cls,
        root: Path,
        model: str,
        version: str,
        intra_op_threads: int,
        warm_up_every_size_up_to: int = WARM_UP_EVERY_SIZE_UP_TO,
    ) -> "Repository":
        """Serve ``root`` (``model.onnx`` at its top, optionally ``config.yaml``) as one version of one model.

        SageMaker copies a Model's S3 prefix into /opt/ml/model; a Model made from one version's prefix, as
        each production variant is, gives this layout. The name and version come from the settings."""
        if not root.is_dir():
            raise FileNotFoundError(f"model directory {root} is not a directory")
        return cls(
            {model: _load_model(root, intra_op_threads, warm_up_every_size_up_to, model, {version: root})},
            intra_op_threads,
            warm_up_every_size_up_to,
            scans_versions=False,
        )

    def failures(self) -> list[LoadFailure]:
        """Every model or version that cannot serve, with its path and reason."""
        found: list[LoadFailure] = []
        for model in self.models.values():
            if model.error is not None:
                found.append(LoadFailure(model.name, "", str(model.path), model.error))
            found.extend(
                LoadFailure(model.name, v.version, str(v.path), v.error)
                for v in model.versions.values()
                if v.error is not None
            )
        return found

    @property
    def ready(self) -> bool:
        """Every model is ready."""
        return all(model.ready for model in self.models.values())

    def unloaded_versions(self) -> list[tuple[Model, str, Path]]:
        """The version directories of every serving model that are not loaded: new, or failed before.

        A directory is taken as complete once it exists: ``servectl.publish.publish_local`` (which
        ``servectl retrain`` uses) writes a version elsewhere and renames the whole directory into
        place, so a half-written version is never seen under its name. Whoever copies versions in by
        other means must do the same. A loaded version whose directory is gone is logged and kept: its
        session is in memory, and unloading it is left to a restart. Models that did not serve at start
        (no router) and new model directories also wait for a restart.
        """
        if not self.scans_versions:
            return []
        found: list[tuple[Model, str, Path]] = []
        for model in self.models.values():
            if model.router is None:
                continue
            try:
                present = {p.name: p for p in sorted(model.path.iterdir()) if p.is_dir()}
            except OSError as error:  # the model's directory is gone or unreadable: keep what is loaded
                log_event(
                    "model_directory_unreadable", model=model.name, path=str(model.path), error=str(error)
                )
                continue
            for name, version in model.versions.items():
                if version.ready and name not in present:
                    log_event("version_directory_removed", model=model.name, version=name,
                              path=str(version.path.parent), serving="until restart")  # fmt: skip
            # A failed numbered version is retried (its files may be right now); a misnamed one never loads.
            found.extend(
                (model, name, path)
                for name, path in present.items()
                if name not in model.versions or (name.isdigit() and not model.versions[name].ready)
            )
        return found

    def load_version(self, model: Model, name: str, version_dir: Path) -> ModelVersion:
        """Load and warm up one version of ``model`` (blocking: call it off the event loop); never raises.

        The model's start-up batching limits size the warm-up, as they size its batcher.
        """
        try:
            return _load_and_warm(
                model, name, version_dir, self.intra_op_threads, self.warm_up_every_size_up_to
            )
        except Exception as error:  # must not end a reload: the version is recorded as failed
            log_event("version_load_error", model=model.name, version=name, **failure_fields(error))
            version = ModelVersion(model=model.name, version=name, path=version_dir / MODEL_FILE)
            version.error = f"{version.path}: {type(error).__name__}: {str(error)[:MESSAGE_CHARS]}"
            return version

    def reload_variants(self) -> list[str]:
        """Re-read every model's config.yaml and apply its variants; a bad file keeps the old config.

        Only the variants change live (weights, routes, sticky, shadow, faults): batching limits
        size queues that already exist, so they take effect at the next start. A config that would
        send traffic (a weight above 0, a header route, the shadow, or, with no variants, the highest
        version as default) to a version that did not load is refused like one that names a missing
        directory.
        """
        problems: list[str] = []
        for model in self.models.values():
            if model.router is None:
                continue
            try:
                config = reload_model_config(model.path, model.config)
            except ConfigError as error:
                problems.append(str(error))
                continue
            numeric = sorted((v for v in model.versions if v.isdigit()), key=int)
            router = VariantRouter(config.variants, default_version=numeric[-1])
            problem = _unknown_versions(config, numeric, model.path) or _unloaded_targets(model, router)
            if problem:
                problems.append(problem)
                continue
            model.config = model.config.model_copy(update={"variants": config.variants})
            model.router = router
        return problems


def _load_model(
    path: Path,
    intra_op_threads: int,
    warm_up_every_size_up_to: int,
    name: str | None = None,
    version_dirs: dict[str, Path] | None = None,
) -> Model:
    """A model directory (named after it, each subdirectory a version), or the given name and version dirs."""
    model = Model(name=name or path.name, path=path)
    try:
        model.config = load_model_config(path)
    except ConfigError as error:
        model.error = str(error)
        return model
    if version_dirs is None:
        version_dirs = {p.name: p for p in sorted(path.iterdir()) if p.is_dir()}
    for version_name, version_dir in version_dirs.items():
        model.versions[version_name] = _load_and_warm(
            model, version_name, version_dir, intra_op_threads, warm_up_every_size_up_to
        )
    numeric = sorted((v for v in model.versions if v.isdigit()), key=int)
    if not numeric:
        model.error = f"{path}: no version directories (expected {path}/<version>/{MODEL_FILE})"
        return model
    problem = _unknown_versions(model.config, numeric, path)
    if problem:
        model.error = problem
        return model
    model.router = VariantRouter(model.config.variants, default_version=numeric[-1])
    return model


def _load_and_warm(
    model: Model, name: str, version_dir: Path, intra_op_threads: int, warm_up_every_size_up_to: int
) -> ModelVersion:
    version = _load_version(model.name, name, version_dir, intra_op_threads)
    if version.runtime is not None:
        sizes = warm_up_sizes(model.config.max_batch_size, warm_up_every_size_up_to)
        version.warm_up_problem = version.runtime.warm_up(sizes)
        if version.runtime.warm_up_error is not None:
            log_event("warm_up_failed", model=model.name, version=version.version,
                      problem=version.warm_up_problem,
                      **failure_fields(version.runtime.warm_up_error))  # fmt: skip
    return version


def _unloaded_targets(model: Model, router: VariantRouter) -> str | None:
    targets = set(router.versions) | ({router.shadow_version} if router.shadow_version else set())
    unloaded = sorted((v for v in targets if not model.versions[v].ready), key=int)
    if unloaded:
        reasons = "; ".join(f"{v}: {model.versions[v].error}" for v in unloaded)
        return f"{model.path}/config.yaml: key 'variants' routes to versions that did not load ({reasons})"
    return None


def _unknown_versions(config: ModelConfig, versions: list[str], path: Path) -> str | None:
    named = config.variants.versions() if config.variants else set()
    unknown = sorted(named - set(versions))
    if unknown:
        return f"{path}/config.yaml: key 'variants' names versions with no directory: {unknown}"
    return None


def _load_version(model: str, name: str, version_dir: Path, intra_op_threads: int) -> ModelVersion:
    version = ModelVersion(model=model, version=name, path=version_dir / MODEL_FILE)
    if not name.isdigit():
        version.error = f"{version_dir}: version directory names must be positive integers"
    elif not version.path.is_file():
        version.error = f"{version.path}: file not found"
    else:
        try:
            version.runtime = OnnxModel(version.path, intra_op_threads)
        except ModelLoadError as error:
            version.error = f"{version.path}: {error}"
    return version
