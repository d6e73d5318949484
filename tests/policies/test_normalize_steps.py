"""The normalizer against every step kind in every position: what will exist reaches the gate, once.

A `pulumi preview --json` document lists one step per resource; the resources that will exist after
the update are those whose step carries a new state and does not remove it. A `pulumi stack export`
lists the state, where `delete: true` marks a resource the engine still has to delete (and
`pendingReplacement: true` one it will create again). For any such document, every resource that
will exist reaches the gate's input exactly once, in document order, with its provider (and so the
provider's region, which the residency rules check); nothing deleted does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.normalize import from_document, from_export, from_preview

STACK, PROJECT = "uae-prod", "model-serving"
PREFIX = f"urn:pulumi:{STACK}::{PROJECT}"
REGIONS = {"me": "me-central-1", "eu": "eu-central-1"}
"""The two providers every document declares, by name, and the region each is configured with."""


def provider_urn(name: str) -> str:
    return f"{PREFIX}::pulumi:providers:aws::{name}"


def provider_ref(name: str) -> str:
    """How steps and states name a provider: its URN and its id."""
    return f"{provider_urn(name)}::04da6b54-80e4-46f7-96ec-b56ff0331ba9"


KEEPING_OPS = ("create", "same", "update", "replace", "create-replacement", "read")
"""Preview steps whose new state will exist after the update."""
REMOVING_OPS = ("delete", "delete-replaced", "discard")
"""Preview steps that remove a resource."""
PROVIDER_PLACES = ("state", "step", "both")
"""Where a step names its resource's provider: in its new state, only on the step, or both."""


@dataclass(frozen=True)
class Step:
    """One resource's step, and what the gate must see of it."""

    name: str
    op: str
    provider: str
    place: str = "both"
    new_state_on_removal: bool = False

    @property
    def urn(self) -> str:
        return f"{PREFIX}::aws:s3/bucket:Bucket::{self.name}"

    @property
    def kept(self) -> bool:
        return self.op in KEEPING_OPS

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "urn": self.urn,
            "type": "aws:s3/bucket:Bucket",
            "custom": True,
            "inputs": {"bucket": self.name},
        }
        if self.place in {"state", "both"}:
            state["provider"] = provider_ref(self.provider)
        return state

    def document(self) -> dict[str, Any]:
        """The step as `pulumi preview --json` writes it."""
        step: dict[str, Any] = {"op": self.op, "urn": self.urn}
        if self.place in {"step", "both"}:
            step["provider"] = provider_ref(self.provider)
        if self.op not in {"create", "create-replacement", "read"}:
            step["oldState"] = self.state()
        # The engine writes no new state for a removal; a document that does must not revive it.
        if self.kept or self.new_state_on_removal:
            step["newState"] = self.state()
        return step


def provider_steps() -> list[dict[str, Any]]:
    return [
        {
            "op": "same",
            "urn": provider_urn(name),
            "newState": {
                "urn": provider_urn(name),
                "type": "pulumi:providers:aws",
                "custom": True,
                "id": "04da6b54-80e4-46f7-96ec-b56ff0331ba9",
                "inputs": {"region": region},
            },
        }
        for name, region in REGIONS.items()
    ]


def preview_of(steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {"config": {f"{PROJECT}:jurisdiction": "AE"}, "steps": steps}


def assert_reaches_gate_once(got: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    """The input's resources are exactly `expected` (URN, provider name), in order, each with its region."""
    providers = {r["urn"]: r for r in got["resources"] if r["type"] == "pulumi:providers:aws"}
    assert sorted(providers) == sorted(provider_urn(n) for n in REGIONS), "both providers reach the gate"
    buckets = [r for r in got["resources"] if r["type"] != "pulumi:providers:aws"]
    assert [r["urn"] for r in buckets] == [urn for urn, _ in expected], (
        "every resource that will exist, once and in order; nothing removed"
    )
    for resource, (urn, provider) in zip(buckets, expected, strict=True):
        assert resource["provider"] == provider_urn(provider), f"{urn} lost its provider: {resource}"
        region = providers[resource["provider"]]["properties"]["region"]
        assert region == REGIONS[provider], f"{urn} is placed in {region}, not {REGIONS[provider]}"


# --- preview documents --------------------------------------------------------------------------

OTHERS = [Step("before", "create", "eu"), Step("after", "update", "eu")]


@pytest.mark.parametrize("place", PROVIDER_PLACES)
@pytest.mark.parametrize("position", [0, 1, 2])
@pytest.mark.parametrize("op", KEEPING_OPS + REMOVING_OPS)
def test_each_step_kind_in_each_position(op: str, position: int, place: str) -> None:
    step = Step("it", op, "me", place=place, new_state_on_removal=True)
    steps = [*OTHERS]
    steps.insert(position, step)
    got = from_preview(preview_of([s.document() for s in steps] + provider_steps()))
    expected = [(s.urn, s.provider) for s in steps if s.kept]
    assert_reaches_gate_once(got, expected)
    assert got["source"] == "preview"
    assert got["jurisdiction"] == "AE", "the preview's own config claim is kept"


@pytest.mark.parametrize("op", REMOVING_OPS)
@pytest.mark.parametrize("with_new_state", [False, True])
def test_removal_first_does_not_hide_the_rest(op: str, with_new_state: bool) -> None:
    removed = Step("gone", op, "me", new_state_on_removal=with_new_state)
    rest = [Step(f"r{i}", kept, "me" if i % 2 else "eu") for i, kept in enumerate(KEEPING_OPS)]
    got = from_preview(preview_of([removed.document(), *(s.document() for s in rest), *provider_steps()]))
    assert_reaches_gate_once(got, [(s.urn, s.provider) for s in rest])


step_strategy = st.builds(
    Step,
    name=st.just(""),
    op=st.sampled_from(KEEPING_OPS + REMOVING_OPS),
    provider=st.sampled_from(sorted(REGIONS)),
    place=st.sampled_from(PROVIDER_PLACES),
    new_state_on_removal=st.booleans(),
)


@settings(max_examples=150, derandomize=True, database=None, deadline=None)
@given(drawn=st.lists(step_strategy, max_size=12), providers_at=st.integers(min_value=0, max_value=12))
def test_any_step_sequence_reaches_the_gate_once(drawn: list[Step], providers_at: int) -> None:
    steps = [Step(f"r{i}", s.op, s.provider, s.place, s.new_state_on_removal) for i, s in enumerate(drawn)]
    documents = [s.document() for s in steps]
    documents[providers_at:providers_at] = provider_steps()
    got = from_preview(preview_of(documents))
    assert_reaches_gate_once(got, [(s.urn, s.provider) for s in steps if s.kept])


def test_state_provider_wins_over_the_steps() -> None:
    step = Step("it", "create", "me").document()
    step["provider"] = provider_ref("eu")
    got = from_preview(preview_of([step, *provider_steps()]))
    (bucket,) = (r for r in got["resources"] if r["urn"].endswith("::it"))
    assert bucket["provider"] == provider_urn("me"), "the new state names the provider the engine will use"


@pytest.mark.parametrize("step_provider", [None, 7, ""])
def test_a_step_without_a_provider_string_leaves_it_empty(step_provider: Any) -> None:
    step = Step("it", "create", "me", place="step").document()
    step["provider"] = step_provider
    got = from_preview(preview_of([step, *provider_steps()]))
    (bucket,) = (r for r in got["resources"] if r["urn"].endswith("::it"))
    assert bucket["provider"] == "", f"no provider is made up from {step_provider!r}: {bucket}"


@pytest.mark.parametrize(
    "ops",
    [
        ("create-replacement", "replace", "delete-replaced"),  # create before delete
        ("delete-replaced", "replace", "create-replacement"),  # delete before replace
    ],
)
def test_replacement_steps_reach_the_gate_once(ops: tuple[str, str, str]) -> None:
    steps = [Step("it", op, "me").document() for op in ops]
    got = from_preview(preview_of([*steps, *provider_steps()]))
    assert_reaches_gate_once(got, [(Step("it", "replace", "me").urn, "me")])


# --- export documents ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Exported:
    """One resource of an export: how the state lists it, and whether it will exist."""

    name: str
    fate: str
    provider: str

    @property
    def urn(self) -> str:
        return f"{PREFIX}::aws:s3/bucket:Bucket::{self.name}"

    @property
    def kept(self) -> bool:
        return self.fate != "delete"

    def states(self) -> list[dict[str, Any]]:
        state: dict[str, Any] = {
            "urn": self.urn,
            "type": "aws:s3/bucket:Bucket",
            "custom": True,
            "id": f"{self.name}-id",
            "inputs": {"bucket": self.name},
            "outputs": {"arn": f"arn:aws:s3:::{self.name}"},
            "provider": provider_ref(self.provider),
        }
        if self.fate == "delete":
            return [state | {"delete": True}]
        if self.fate == "pendingReplacement":
            return [state | {"pendingReplacement": True}]
        if self.fate == "replaced":  # the old state waits for deletion beside its replacement
            return [state | {"delete": True, "id": "old-id"}, state]
        if self.fate == "replaced-new-first":
            return [state, state | {"delete": True, "id": "old-id"}]
        return [state | {"delete": False}] if self.fate == "delete-false" else [state]


EXPORT_FATES = ("live", "delete-false", "delete", "pendingReplacement", "replaced", "replaced-new-first")


def export_of(resources: list[Exported], providers_at: int = 0) -> dict[str, Any]:
    states = [s for r in resources for s in r.states()]
    states[providers_at:providers_at] = [p["newState"] for p in provider_steps()]
    return {"version": 3, "deployment": {"manifest": {}, "resources": states}}


@pytest.mark.parametrize("position", [0, 1, 2])
@pytest.mark.parametrize("fate", EXPORT_FATES)
def test_each_export_state_in_each_position(fate: str, position: int) -> None:
    resources = [Exported("before", "live", "eu"), Exported("after", "live", "eu")]
    resources.insert(position, Exported("it", fate, "me"))
    got = from_document(export_of(resources))
    assert got["source"] == "export"
    assert_reaches_gate_once(got, [(r.urn, r.provider) for r in resources if r.kept])
    ids = {r["urn"]: r.get("id") for r in got["resources"]}
    assert all(ids[r.urn] == f"{r.name}-id" for r in resources if r.kept), (
        f"a replacement keeps its id: {ids}"
    )


@settings(max_examples=100, derandomize=True, database=None, deadline=None)
@given(
    drawn=st.lists(st.tuples(st.sampled_from(EXPORT_FATES), st.sampled_from(sorted(REGIONS))), max_size=10),
    providers_at=st.integers(min_value=0, max_value=20),
)
def test_any_export_reaches_the_gate_once(drawn: list[tuple[str, str]], providers_at: int) -> None:
    resources = [Exported(f"r{i}", fate, provider) for i, (fate, provider) in enumerate(drawn)]
    got = from_export(export_of(resources, providers_at))
    assert_reaches_gate_once(got, [(r.urn, r.provider) for r in resources if r.kept])


# --- repeated URNs ------------------------------------------------------------------------------


@pytest.mark.parametrize("ops", [("create", "create"), ("update", "same"), ("replace", "replace")])
def test_a_urn_repeated_outside_a_replacement_is_kept_twice_and_counted(ops: tuple[str, str]) -> None:
    steps = [Step("it", op, "me").document() for op in ops]
    got = from_preview(preview_of([*steps, *provider_steps()]))
    urn = Step("it", "create", "me").urn
    assert [r["urn"] for r in got["resources"]].count(urn) == 2, "every copy is judged"
    assert got["duplicate_urns"] == {urn: 2}


def test_a_refresh_and_the_step_after_it_are_one_resource() -> None:
    """`preview --refresh` writes a refresh step for each resource, then its step: one resource, as the
    later step has it; a further repetition still counts."""
    # A refresh step carries the refreshed state as its new state.
    steps = [
        Step("it", "refresh", "me", new_state_on_removal=True).document(),
        Step("it", "same", "me").document(),
    ]
    assert all("newState" in s for s in steps)
    got = from_preview(preview_of([*steps, *provider_steps()]))
    assert got["duplicate_urns"] == {}
    assert_reaches_gate_once(got, [(Step("it", "same", "me").urn, "me")])
    again = [*steps, Step("it", "same", "me").document()]
    assert from_preview(preview_of([*again, *provider_steps()]))["duplicate_urns"] == {
        Step("it", "same", "me").urn: 2
    }


def test_a_replacement_is_no_repetition() -> None:
    steps = [Step("it", op, "me").document() for op in ("create-replacement", "replace", "delete-replaced")]
    assert from_preview(preview_of([*steps, *provider_steps()]))["duplicate_urns"] == {}


def test_a_urn_repeated_in_an_export_is_counted() -> None:
    got = from_export(export_of([Exported("it", "live", "me"), Exported("it", "live", "me")]))
    assert got["duplicate_urns"] == {Exported("it", "live", "me").urn: 2}


@pytest.mark.parametrize("deployment", [{"manifest": {}}, {"manifest": {}, "resources": []}])
def test_an_empty_export_has_no_resources(deployment: dict[str, Any]) -> None:
    got = from_document({"version": 3, "deployment": deployment})
    assert (got["source"], got["resources"], got["duplicate_urns"]) == ("export", [], {})


def test_an_export_without_a_manifest_or_resources_is_refused() -> None:
    with pytest.raises(ValueError, match=r"deployment\.resources"):
        from_document({"version": 3, "deployment": {"secrets_providers": {}}})
