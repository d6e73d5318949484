"""An optional response cache per model version, for models whose answer depends only on their inputs.

Off unless both the server gives it a byte budget (``SERVING_RESPONSE_CACHE_BYTES``) and a model
opts in (``response_cache: true`` in its config.yaml): a model with dropout, sampling or state must
not be cached, and only its owner knows. Each model version has its own cache, so an entry can
never answer for another version. The key is a hash of everything that decides the outputs' values:
each input's name, datatype, shape and bytes, and the outputs asked for. No request parameter
changes a result today; ``binary_data_output`` changes only the encoding, which the transport
applies after the cache, so a cached response is encoded exactly as a computed one.
"""

import hashlib
import struct
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from serving_image.settings import Settings
from serving_image.tensors import InputTensor

# Bytes charged per entry on top of its arrays: the key, the list and the array headers.
ENTRY_OVERHEAD_BYTES = 256


@dataclass(frozen=True, slots=True)
class CacheLimits:
    """Bounds of one model version's cache; ``max_bytes`` 0 turns caching off."""

    max_bytes: int = 0
    max_entries: int = 10_000

    @classmethod
    def for_settings(cls, settings: Settings) -> "CacheLimits":
        """``SERVING_RESPONSE_CACHE_BYTES`` and ``SERVING_RESPONSE_CACHE_ENTRIES``."""
        return cls(settings.response_cache_bytes, settings.response_cache_entries)

    @property
    def enabled(self) -> bool:
        """Whether any model may cache at all."""
        return self.max_bytes > 0 and self.max_entries > 0


def cache_key(inputs: Sequence[InputTensor], outputs: Sequence[str]) -> bytes:
    """A digest of the inputs (sorted by name) and the outputs asked for, in their order.

    Each part is length-prefixed, so no two different requests hash the same bytes.
    """
    digest = hashlib.blake2b(digest_size=32)
    for tensor in sorted(inputs, key=lambda tensor: tensor.name):
        _part(digest, tensor.name.encode())
        _part(digest, tensor.datatype.encode())
        _part(digest, struct.pack(f"<{len(tensor.shape)}q", *tensor.shape))
        _tensor_bytes(digest, tensor.data)
    for name in outputs:
        _part(digest, name.encode())
    return digest.digest()


def _part(digest: "hashlib.blake2b", data: bytes) -> None:
    digest.update(struct.pack("<Q", len(data)))
    digest.update(data)


def _tensor_bytes(digest: "hashlib.blake2b", data: np.ndarray) -> None:
    if data.dtype.kind not in "OUS":
        _part(digest, np.ascontiguousarray(data).tobytes())
        return
    # BYTES tensors are object arrays: hash each element's bytes, never the object pointers.
    items = data.ravel().tolist()
    digest.update(struct.pack("<Q", len(items)))
    for item in items:
        _part(digest, item if isinstance(item, bytes) else str(item).encode())


class ResponseCache:
    """A least-recently-used map from a request's key to its outputs, bounded in bytes and entries.

    Used from the event loop only, so it takes no lock. Stored arrays are private, contiguous,
    read-only copies: a batch's output is a view of the whole batch, which must not be kept alive.
    """

    def __init__(self, limits: CacheLimits) -> None:
        self.limits = limits
        self.bytes = 0
        self._entries: OrderedDict[bytes, tuple[list[np.ndarray], int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> list[np.ndarray] | None:
        """The outputs stored under ``key``, now the most recently used; None on a miss."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: bytes, outputs: Sequence[np.ndarray]) -> bool:
        """Store a copy of ``outputs``, evicting the least recently used; False if it cannot fit."""
        size = ENTRY_OVERHEAD_BYTES + sum(_size(array) for array in outputs)
        if size > self.limits.max_bytes or key in self._entries:
            return False
        while self._entries and (
            self.bytes + size > self.limits.max_bytes or len(self._entries) >= self.limits.max_entries
        ):
            _, (_, evicted) = self._entries.popitem(last=False)
            self.bytes -= evicted
        self._entries[key] = ([_frozen_copy(array) for array in outputs], size)
        self.bytes += size
        return True


def _size(array: np.ndarray) -> int:
    if array.dtype.kind != "O":
        return int(array.nbytes)
    return int(array.nbytes) + sum(len(item) if isinstance(item, bytes | str) else 64 for item in array.flat)


def _frozen_copy(array: np.ndarray) -> np.ndarray:
    copy = np.array(array, copy=True, order="C")
    copy.flags.writeable = False
    return copy
