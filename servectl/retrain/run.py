"""One retrain, end to end: skip or go on, read and check the data, train, compare, publish, start the canary.

:func:`retrain` returns an :class:`Outcome` (what the command prints and its exit code); it raises nothing
for a refusal or a skip, and turns every expected failure into an outcome with the reason.
"""

import getpass
import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from servectl.publish import NAME, PublishError, publish_local
from servectl.retrain import buckets as remote
from servectl.retrain import data as labelled
from servectl.retrain import lineage
from servectl.retrain.evaluate import Metrics, judge, measure
from servectl.retrain.serving import CARD_FILE, RetrainError, ServingVersion, canary, serving_version
from servectl.retrain.state import Busy, State
from serving_image import build_models, model_zoo
from serving_image.features import repository as feature_repository

PUBLISHED, REFUSED, SKIPPED, FAILED = "published", "refused", "skipped", "failed"
EXIT_CODES = {PUBLISHED: 0, REFUSED: 3, SKIPPED: 4, FAILED: 1}
STAGING = ".servectl/staging"


@dataclass(frozen=True, kw_only=True)
class Request:
    """What to retrain, from which data, and the guards."""

    model: str
    data: str
    """The labelled CSV; with ``feature_service``, the labels parquet the service's features are joined to."""
    repository: Path
    state: Path
    margin: float = 0.01
    trigger: str | None = None
    min_interval: float = 3600.0
    server_pid: int | None = None
    """A running server to send SIGHUP once the version is published and the canary weights written."""
    feature_service: str | None = None
    """Read the rows through this feature service of ``feature_repo`` (docs/features.md), not a CSV."""
    feature_repo: Path | None = None
    publish_buckets: tuple[str, ...] = ()
    """`s3://BUCKET[/ROOT]`: the serving version comes from the first, the new one goes to all (not to
    ``repository``, whose BUILD_REPORT.json then only names the estimators), and no canary is started."""


@dataclass(kw_only=True)
class Outcome:
    """The contract's JSON object, and the exit code (2 for bad input, which is also "failed")."""

    outcome: str
    model: str
    reason: str
    version: str | None = None
    parent_version: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None

    @property
    def code(self) -> int:
        """The process exit status."""
        return self.exit_code if self.exit_code is not None else EXIT_CODES[self.outcome]

    def to_json(self) -> dict[str, Any]:
        """The object `--json` prints."""
        return {
            "outcome": self.outcome,
            "model": self.model,
            "version": self.version,
            "parent_version": self.parent_version,
            "reason": self.reason,
            "metrics": self.metrics,
        }


def retrain(request: Request, now: float | None = None) -> Outcome:
    """Run one retrain of ``request.model``; see the module docstring."""
    if not NAME.match(request.model):
        reason = f"--model {request.model!r}: use lower case letters, digits and dashes"
        return _failed(request, None, reason, exit_code=2)
    state = State(request.state)
    now = time.time() if now is None else now
    try:
        with state.lock(request.model):
            skipped = _skip_reason(state, request, now)
            if skipped:
                return Outcome(outcome=SKIPPED, model=request.model, reason=skipped)
            if request.publish_buckets:
                return _from_buckets(state, request, now)
            return _locked(state, request, now)
    except Busy as busy:
        return Outcome(outcome=SKIPPED, model=request.model, reason=str(busy))


def _skip_reason(state: State, request: Request, now: float) -> str | None:
    if request.trigger is not None:
        done = state.handled(request.trigger)
        if done is not None:
            return (
                f"trigger {request.trigger} was already handled at {_iso(done['time'])} "
                f"({done['outcome']}, version {done['version']})"
            )
    last = state.last_run(request.model)
    if last is not None and now - last < request.min_interval:
        return (
            f"{request.model} was last retrained at {_iso(last)}, {now - last:.0f} s ago; "
            f"the rate limit allows one retrain per {request.min_interval:.0f} s"
        )
    return None


def _from_buckets(state: State, request: Request, now: float) -> Outcome:
    """The retrain run on the serving version fetched from the first bucket into a scratch repository."""
    try:
        with remote.serving_from(request.repository, request.publish_buckets, request.model) as scratch:
            return _locked(state, replace(request, repository=scratch), now)
    except RetrainError as error:
        return _failed(request, None, str(error))
    except ValueError as error:  # a malformed --publish-bucket
        return _failed(request, None, f"--publish-bucket {error}", exit_code=2)


def _locked(state: State, request: Request, now: float) -> Outcome:
    parent: ServingVersion | None = None
    try:
        parent = serving_version(request.repository, request.model)
        rows = _rows(request, parent)
        sets = labelled.split(rows)
    except labelled.InputError as error:
        return _failed(request, parent, str(error), exit_code=2)
    except RetrainError as error:
        return _failed(request, parent, str(error))
    state.record_run(request.model, now)
    staging_root = request.repository / STAGING
    staging_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{request.model}-", dir=staging_root))
    try:
        return _train_and_publish(state, request, parent, rows, sets, staging, now)
    except (RetrainError, PublishError) as error:
        return _failed(request, parent, str(error))
    except Exception as error:  # training or export broke: still one line and the contract's JSON
        return _failed(request, parent, f"{type(error).__name__}: {' '.join(str(error).split())}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _rows(request: Request, parent: ServingVersion) -> labelled.Labelled:
    if request.feature_service is None:
        raw = labelled.read_bytes(request.data)
        return labelled.parse(request.data, raw, parent.feature_names)
    # Imported here: reading through Feast needs pandas, which the CSV path does not.
    from servectl.retrain.feature_data import from_feature_store

    repo = request.feature_repo if request.feature_repo is not None else feature_repository.DEFAULT_REPO
    return from_feature_store(repo, request.feature_service, Path(request.data), parent.feature_names)


def _train_and_publish(
    state: State,
    request: Request,
    parent: ServingVersion,
    rows: labelled.Labelled,
    sets: labelled.Split,
    staging: Path,
    now: float,
) -> Outcome:
    pipeline = parent.trainer(sets.train)
    profile = build_models.training_profile(sets.train)
    exported = model_zoo.to_onnx(pipeline)
    if rows.feature_service is not None and rows.feature_service_version is not None:
        build_models.record_feature_service(exported, rows.feature_service, rows.feature_service_version)
    # The held-out accuracy is the version's reference: the quality alert compares live accuracy with it.
    accuracy = build_models.held_out_accuracy(exported, sets.train)
    model_path = build_models._write_version(staging, exported, profile, accuracy)
    candidate = model_zoo.open_session(model_path.read_bytes())
    results: dict[str, dict[str, Metrics]] = {}
    metrics: dict[str, Any] = {}
    for name, x, y in (
        ("holdout", sets.train.x_test, sets.train.y_test),
        ("recent", sets.recent_x, sets.recent_y),
    ):
        results[name] = {"candidate": measure(candidate, x, y), "serving": measure(parent.session, x, y)}
        metrics[name] = {"rows": len(y), **{who: m.to_json() for who, m in results[name].items()}}
    version = str(int(parent.version) + 1)
    outcome = Outcome(
        outcome=REFUSED, model=request.model, reason="", parent_version=parent.version, metrics=metrics
    )
    reasons = judge(results, request.margin)
    if reasons:
        outcome.reason = "nothing published: " + "; ".join(reasons)
        _handled(state, request, outcome, now)
        return outcome
    card = lineage.card(
        request=request, parent=parent, version=version, rows=rows, sets=sets, metrics=metrics, now=now
    )
    (staging / CARD_FILE).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if request.publish_buckets:
        published = remote.publish(staging, request.model, version, remote.targets(request.publish_buckets))
        started = remote.next_step(request.model, parent.version, version)
    else:
        target = publish_local(staging, request.repository, request.model, version, _caller())
        published = f"published {request.model} version {version} at {target}"
        started = canary(request.repository, request.model, parent.version, version, request.server_pid)
    outcome.outcome, outcome.version = PUBLISHED, version
    outcome.reason = f"{published}; {started}"
    _handled(state, request, outcome, now)
    return outcome


def _handled(state: State, request: Request, outcome: Outcome, now: float) -> None:
    if request.trigger is not None:
        state.record_trigger(request.trigger, outcome.outcome, outcome.version, now)


def _failed(
    request: Request, parent: ServingVersion | None, reason: str, exit_code: int | None = None
) -> Outcome:
    return Outcome(
        outcome=FAILED,
        model=request.model,
        reason=reason,
        parent_version=parent.version if parent else None,
        exit_code=exit_code,
    )


def _caller() -> str:
    try:
        return f"{getpass.getuser()} (servectl retrain)"
    except (KeyError, OSError):  # a container user without a passwd entry
        return "servectl retrain"


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
