"""Feast's S3 registry store, reading the registry object without first asking about its bucket.

Feast's `S3RegistryStore.get_registry_proto` calls HeadBucket before every read, to tell a missing bucket
from a forbidden one. AWS authorizes HeadBucket as `s3:ListBucket` on the whole bucket (a HeadBucket
request carries no `s3:prefix` a condition could narrow), and the registry lives in the region's model
bucket beside every tenant's models: granting that would let each reading model list them all. This store
reads the one object, which `s3:GetObject` on it allows, and maps S3's answer to Feast's errors as the
parent does. Writing is the parent's (`PutObject` on the object). The stacks name this class as the
registry's `registry_store_type` (stacks/features.py).
"""

from typing import Any

from botocore.exceptions import ClientError
from feast.errors import S3RegistryBucketForbiddenAccess, S3RegistryBucketNotExist
from feast.infra.registry.s3 import S3RegistryStore
from feast.protos.feast.core.Registry_pb2 import Registry as RegistryProto

_MISSING_BUCKET = "NoSuchBucket"
_FORBIDDEN = ("AccessDenied", "403")


class ObjectOnlyS3RegistryStore(S3RegistryStore):
    """The registry read with GetObject alone (no HeadBucket, hence no `s3:ListBucket`)."""

    def get_registry_proto(self) -> Any:
        # GetObject, not download_fileobj: its HEAD answers a bare 404 for a missing bucket and key alike,
        # while GetObject's error names which (NoSuchBucket, NoSuchKey).
        try:
            answer = self.s3_client.meta.client.get_object(Bucket=str(self._bucket), Key=self._key)
            body = answer["Body"].read()
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            if code == _MISSING_BUCKET:
                raise S3RegistryBucketNotExist(self._bucket) from error  # type: ignore[no-untyped-call]
            if code in _FORBIDDEN:
                raise S3RegistryBucketForbiddenAccess(self._bucket) from error  # type: ignore[no-untyped-call]
            raise FileNotFoundError(
                f"Error while trying to locate Registry at path {self._uri.geturl()}"
            ) from error
        registry = RegistryProto()
        registry.ParseFromString(body)
        return registry
