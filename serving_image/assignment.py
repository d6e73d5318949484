"""How a request came to its version, for the `assignment` label of `serving_requests_total`.

An experiment's sample-ratio test may only compare traffic that was randomised by the weights: a header
route or a client that names a version sends its requests wherever it likes, so they would skew the split
without anything being wrong. Four values, so the label stays bounded:

- `weighted`: drawn at random by the weights (a model without variants has its one version at weight 100);
- `sticky`: drawn from the hash of a user key (the sticky header): random per user, not per request;
- `header`: a header route matched;
- `explicit`: the client named the version (`/v2/models/m/versions/v/infer`, gRPC `model_version`), an
  asynchronous job's run (the worker runs the version the job was given at submit, whose own request is
  counted with how it was assigned), and a request that never reached routing (its version is empty).

Behind the mesh the gateway chooses the version and the pod only sees one: each route of the VirtualService
sets `ASSIGNMENT_HEADER` (and a sticky route `USER_HEADER`, the user key), overwriting whatever a client sent,
and the server believes them only when told it runs behind that gateway (`trust_assignment_header`), since a
client that reaches a standalone server directly could otherwise relabel its requests.

Sticky traffic is counted in users, not requests (a heavy user's requests are not independent draws):
`StickyUsers` counts the first request of each user key per version that the process has seen, in a bounded
set (`serving_sticky_users_total`).
"""

import hashlib
from collections import OrderedDict
from collections.abc import Mapping

WEIGHTED, STICKY, HEADER, EXPLICIT = "weighted", "sticky", "header", "explicit"
ASSIGNMENTS = frozenset({WEIGHTED, STICKY, HEADER, EXPLICIT})
ASSIGNMENT_HEADER = "x-variant-assignment"
"""Set by the mesh's routes: how the gateway chose the version (one of `ASSIGNMENTS`)."""
USER_HEADER = "x-variant-user"
"""Set by the mesh's sticky routes: the user key the gateway hashed."""
STICKY_USERS_CAPACITY = 100_000
"""User keys remembered per process (16-byte digests, a few MB); the least recently seen is forgotten."""


def from_mesh(headers: Mapping[str, str], assignment: str, user: str | None) -> tuple[str, str | None]:
    """The assignment and user key the gateway's route reports, else the server's own.

    A value outside the four is ignored (the server's own choice stands), so a misconfigured route cannot
    add label values."""
    reported = headers.get(ASSIGNMENT_HEADER)
    if reported not in ASSIGNMENTS:
        return assignment, user
    return reported, headers.get(USER_HEADER) if reported == STICKY else None


class StickyUsers:
    """The user keys seen per model and version, bounded: `first` is True once per key until forgotten.

    What it counts: each user once per process that serves it (a user whose requests reach two pods or
    two worker processes counts twice), again after the process restarts or after `capacity` other users
    pushed it out, and again under a new version when new weights move it. Nobody is missed: a user's
    first request in a process always counts."""

    def __init__(self, capacity: int = STICKY_USERS_CAPACITY) -> None:
        self._capacity = capacity
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def first(self, model: str, version: str, user: str) -> bool:
        """Whether this is the first request of `user` to this model version that the set remembers."""
        key = hashlib.blake2b(f"{model}\0{version}\0{user}".encode(), digest_size=16).digest()
        if key in self._seen:
            self._seen.move_to_end(key)
            return False
        self._seen[key] = None
        if len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        return True
