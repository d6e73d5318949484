"""Which loaded model versions take entity keys, and the step that turns a request's keys into features.

The data plane asks this module four things: the join key's spec for decoding (``announced``), the
metadata parameters (``parameters``), whether a request's keys are acceptable (``check``, at a job's
submit) and the request with its features in place of its keys (``resolve``, before inference). Versions
are bound on the lookup thread (serving_image/features/reads.py), the only one that touches Feast.
"""

import asyncio
import dataclasses

from serving_image.access_log import log_event
from serving_image.errors import InvalidInput
from serving_image.features.online import JOIN_KEY_SPEC, EntityInput, NotServable, OnlineFeatures, entity_ids
from serving_image.runtime import OnnxModel
from serving_image.tensors import InferRequest, InputTensor

_NO_SERVICE = "it names no feature service"


class EntityInputs:
    """Per model version: how it is served from entity keys, or why it cannot be (versions whose metadata
    name no feature service are absent). With no online store, nothing is bound and nothing changes."""

    def __init__(self, features: OnlineFeatures | None) -> None:
        self.features = features
        self._bound: dict[tuple[str, str], EntityInput | str] = {}
        self._refresher: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Publish the freshness gauge now and periodically (serving_image/features/online.py)."""
        if self.features is not None and self._refresher is None:
            self._refresher = asyncio.create_task(self.features.refresh_periodically())

    def stop(self) -> None:
        """Stop refreshing and release the lookup thread."""
        if self._refresher is not None:
            self._refresher.cancel()
        if self.features is not None:
            self.features.close()

    async def bind(self, model: str, version: str, runtime: OnnxModel | None) -> None:
        """Whether (and how) a loaded version takes entity keys; a service it cannot be served from is
        logged with the reason, and its requests with keys are refused naming it."""
        if self.features is None or runtime is None:
            return
        try:
            entity = await self.features.reads.run(self.features.bind, runtime)
        except NotServable as error:
            self._bound[(model, version)] = str(error)
            log_event("entity_input_unavailable", model=model, version=version, reason=str(error))
            return
        if entity is not None:
            self._bound[(model, version)] = entity

    def announced(self, model: str, version: str) -> bool:
        """Whether the version's decoding accepts the join key (served, or refused with its reason)."""
        return (model, version) in self._bound

    def parameters(self, model: str, version: str) -> dict[str, str] | None:
        """The model metadata's ``parameters`` of a version served from entity keys, else None."""
        entity = self._bound.get((model, version))
        return entity.parameters() if isinstance(entity, EntityInput) else None

    def check(self, model: str, version: str, request: InferRequest, max_batch_size: int) -> bool:
        """Whether the request sends entity keys, after refusing (400) keys the version cannot take."""
        if self._served(model, version, request) is None:
            return False
        entity_ids(request.inputs, max_batch_size)
        return True

    async def resolve(
        self, model: str, version: str, request: InferRequest, max_batch_size: int
    ) -> InferRequest:
        """The request with its entity ids replaced by their features (``to_model_input``), or as it is."""
        entity = self._served(model, version, request)
        if entity is None or self.features is None:
            return request
        ids = entity_ids(request.inputs, max_batch_size)
        matrix = await self.features.fetch(entity, model, version, ids)
        tensor = InputTensor(entity.model_input, "FP32", matrix.shape, matrix)
        return dataclasses.replace(request, inputs=[tensor])

    def _served(self, model: str, version: str, request: InferRequest) -> EntityInput | None:
        """How the request's keys are served; None if it sends none; 400 if the version cannot take them."""
        if not any(tensor.name == JOIN_KEY_SPEC.name for tensor in request.inputs):
            return None
        entity = self._bound.get((model, version), _NO_SERVICE)
        if not isinstance(entity, EntityInput):
            raise InvalidInput(
                f"input '{JOIN_KEY_SPEC.name}': model '{model}' version '{version}' cannot be served from "
                f"entity keys: {entity}"
            )
        return entity
