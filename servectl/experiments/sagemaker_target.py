"""Applying a step's weights to a SageMaker endpoint: the stack file first, then the endpoint's variants.

An smb stack's EndpointConfig takes each production variant's initial weight from the stack file's
`variants.weights`. A step writes the file and then calls UpdateEndpointWeightsAndCapacities, which shifts
traffic on the running endpoint without a new EndpointConfig or a deployment. So both hold the same
weights: the next `pulumi up` builds an EndpointConfig with the weights the endpoint already routes by
(nothing shifts), and no `pulumi up` is needed for the step itself. Calling only the API would leave the
file behind and the next `pulumi up` would undo the rollout; writing only the file would change nothing
until a full endpoint update.

Order and failure: everything that can be checked is checked before anything is written (the endpoint
is InService and has a variant `v<version>` for every version with weight); then the file is written
(weights_file checks that nothing else in it changed); then the API is called. If the call fails the file
is restored to its previous text and the step fails with the API's error: the endpoint kept its weights,
so the file must too, and nothing is logged as applied (run.apply logs a step only after the target
returns). A call that failed on the client side but took effect on the endpoint is caught by the next
analysis: the endpoint's desired weights are not the file's, and it holds naming both
(cloudwatch.endpoint_differs).
"""

from dataclasses import dataclass
from typing import Any

from servectl.experiments.cloudwatch import variant_name
from servectl.experiments.decision import Schedule
from servectl.experiments.targets import StackTarget
from servectl.experiments.weights_file import set_stack_weights


class SageMakerStepError(RuntimeError):
    """The endpoint refused or could not take the weights; the message says what was left as it was."""


def _show(weights: dict[str, int]) -> str:
    return ", ".join(f"v{v} {w}%" for v, w in weights.items())


@dataclass(frozen=True)
class SageMakerTarget:
    """A model of an smb stack served by a SageMaker endpoint, one production variant per version."""

    stack: StackTarget
    endpoint: str
    sagemaker: Any
    """A boto3 SageMaker client."""

    def weights(self) -> dict[str, int]:
        """The stack file's weights (the EndpointConfig's, and the endpoint's once a step is confirmed)."""
        return self.stack.weights()

    def schedule(self) -> Schedule | None:
        """The stack's rollout block for the model."""
        return self.stack.schedule()

    def optional_metrics(self) -> frozenset[str]:
        """The feedback metrics the stack marks optional for the model."""
        return self.stack.optional_metrics()

    def _variants(self, weights: dict[str, int]) -> list[dict[str, Any]]:
        """The update's variants, after checking the endpoint can take them."""
        try:
            described = self.sagemaker.describe_endpoint(EndpointName=self.endpoint)
        except Exception as error:  # botocore's errors share no base but Exception
            raise SageMakerStepError(
                f"DescribeEndpoint {self.endpoint} failed: {error}; nothing written"
            ) from error
        status = described.get("EndpointStatus")
        if status != "InService":
            raise SageMakerStepError(
                f"endpoint {self.endpoint} is {status}, not InService; nothing written, step again once it is"
            )
        names = {v["VariantName"] for v in described.get("ProductionVariants", [])}
        absent = sorted(variant_name(v) for v, w in weights.items() if w > 0 and variant_name(v) not in names)
        if absent:
            raise SageMakerStepError(
                f"endpoint {self.endpoint} has no production variant {', '.join(absent)} "
                f"(it has {sorted(names)}); nothing written"
            )
        return [
            {"VariantName": variant_name(v), "DesiredWeight": float(w)}
            for v, w in weights.items()
            if variant_name(v) in names
        ]

    def apply(self, weights: dict[str, int]) -> str:
        """Write the stack file, then shift the endpoint's traffic; restore the file if that fails."""
        variants = self._variants(weights)
        path = self.stack.path
        before = path.read_text()
        set_stack_weights(path, self.stack.model, weights)
        try:
            self.sagemaker.update_endpoint_weights_and_capacities(
                EndpointName=self.endpoint, DesiredWeightsAndCapacities=variants
            )
        except Exception as error:
            path.write_text(before)
            raise SageMakerStepError(
                f"UpdateEndpointWeightsAndCapacities on {self.endpoint} failed: {error}; {path.name} was "
                f"restored and the endpoint keeps its weights: nothing was stepped"
            ) from error
        return (
            f"wrote {_show(weights)} into {path.name}; endpoint {self.endpoint} shifting to them "
            "(UpdateEndpointWeightsAndCapacities; the next `pulumi up` keeps them: its EndpointConfig takes "
            "the file's weights)"
        )
