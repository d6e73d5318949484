"""moto's server as a process on loopback: the local AWS API emulator for the CloudWatch and SageMaker
tests (real HTTP, botocore's own serialisation and moto's implementation of each call, never a fake).

What moto 5 does and does not do, as these tests rely on it: GetMetricData sums one-minute periods of the
data put with PutMetricData, with timestamps in the past; CreateModel, CreateEndpointConfig and
CreateEndpoint keep the variants and their weights; UpdateEndpointWeightsAndCapacities sets each named
variant's DesiredWeight and CurrentWeight at once and leaves the endpoint InService (a real endpoint is
`Updating` for a while, with current and desired weights apart, and moto cannot show that); an initial
weight of 0 is dropped (falsy), so the tests never create a variant at 0.
"""

import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3

from servectl.experiments.local_prometheus import free_port

REGION = "me-central-1"


@contextmanager
def moto_server(log: Path) -> Iterator[str]:
    """`moto_server` on a free loopback port until the block ends; its URL."""
    # The project's own moto (a dev dependency), beside this interpreter, not whichever is first on PATH.
    binary = str(Path(sys.executable).parent / "moto_server")
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/moto-api/", timeout=1):
                    break
            except OSError:
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, f"moto_server did not answer: {log.read_text()}"
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def reset(url: str) -> None:
    """Forget every resource and metric (between tests sharing one server)."""
    request = urllib.request.Request(f"{url}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass


def client(service: str) -> Any:
    """A boto3 client of the emulator (the environment points boto3 at it)."""
    return boto3.client(service, region_name=REGION)  # type: ignore[call-overload]


def put_minutes(endpoint: str, version: str, minutes: dict[float, tuple[int, int, int]]) -> None:
    """Per minute start: Invocations, Invocation4XXErrors and Invocation5XXErrors of variant v<version>,
    each as SageMaker publishes them (one datapoint per minute, in the minute)."""
    dims = [{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": f"v{version}"}]
    data = []
    for minute, values in minutes.items():
        stamp = minute + 30  # inside the minute, as a one-minute period's datapoint is
        for name, value in zip(
            ("Invocations", "Invocation4XXErrors", "Invocation5XXErrors"), values, strict=True
        ):
            data.append({"MetricName": name, "Dimensions": dims, "Timestamp": stamp, "Value": float(value)})
        latency = {"SampleCount": float(values[0]), "Sum": 4000.0 * values[0], "Minimum": 1e3, "Maximum": 9e3}
        data.append({"MetricName": "ModelLatency", "Dimensions": dims, "Timestamp": stamp,
                     "Unit": "Microseconds", "StatisticValues": latency})  # fmt: skip
    cloudwatch = client("cloudwatch")
    for i in range(0, len(data), 500):
        cloudwatch.put_metric_data(Namespace="AWS/SageMaker", MetricData=data[i : i + 500])


def create_endpoint(endpoint: str, weights: dict[str, int]) -> None:
    """A SageMaker model per version, an EndpointConfig with one variant `v<version>` each at its weight,
    and the endpoint, as the smb stacks build them."""
    sagemaker = client("sagemaker")
    role = "arn:aws:iam::123456789012:role/serving"
    image = "123456789012.dkr.ecr.me-central-1.amazonaws.com/model-serving/server@sha256:" + "0" * 64
    variants = []
    for version, weight in weights.items():
        name = f"{endpoint}-v{version}"
        sagemaker.create_model(ModelName=name, ExecutionRoleArn=role, PrimaryContainer={"Image": image})
        variants.append({"VariantName": f"v{version}", "ModelName": name, "InitialInstanceCount": 1,
                         "InstanceType": "ml.m5.large", "InitialVariantWeight": float(weight)})  # fmt: skip
    sagemaker.create_endpoint_config(EndpointConfigName=f"{endpoint}-config", ProductionVariants=variants)
    sagemaker.create_endpoint(EndpointName=endpoint, EndpointConfigName=f"{endpoint}-config")
