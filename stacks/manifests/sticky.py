"""Sticky version assignment at the edge: the gateway's Lua filter that turns a user id into a bucket 0..99.

The standalone server (`serving_image.variants`) and the gateway must put every user in the same bucket, so
both hash the header's bytes with 32-bit FNV-1a, mix the result with MurmurHash3's finaliser and scale it to
0..99 by its high bits. LuaJIT numbers are doubles, so every 32-bit multiply is split into 16-bit halves to
stay exact. The VirtualService then sends each bucket range to one version
(`bucket_ranges`), laid out in version order as the server's router does, so raising a weight moves the
fewest users.

Which header a request is hashed on depends on the model it calls (models may name different sticky headers),
so the filter reads the model name from the `/v2/models/<name>` path and looks its header up in a table made
from the stack's models. Before anything else it drops any client-sent bucket and caller header: the bucket is
the gateway's to compute, and the caller header is written afterwards by `jwt_authn` from the validated token.
Envoy clears the route cache whenever a Lua script changes request headers, so the bucket routes see the
header; the filter must run before `jwt_authn`, or it would remove the caller header that filter writes.
"""

import re
from collections.abc import Iterable, Mapping, Sequence

CALLER_HEADER = "x-caller"
"""Carries the validated token's subject to the serving pods (written by jwt_authn, never by the client)."""
BUCKET_HEADER = "x-variant-bucket"
"""Carries the sticky bucket, 0..99, from the gateway's Lua filter to the VirtualService's bucket routes."""
ASSIGNMENT_HEADER = "x-variant-assignment"
"""Set by every route of a model's VirtualService: how the gateway chose the version (`weighted`, `sticky`,
`header` or `explicit`), for the server's `assignment` label (serving_image/assignment.py). A route's `set`
replaces any client-sent value, and the pods believe it (SERVING_TRUST_ASSIGNMENT_HEADER) only because the
gateway is their one caller."""
USER_HEADER = "x-variant-user"
"""Set by the sticky routes from the model's sticky header (Envoy's `%REQ(...)%`): the user key, so a pod
counts each user's first request (`serving_sticky_users_total`) without knowing which header is sticky."""
BUCKETS = 100
"""Buckets per model: one per percent of weight, so any integer split maps to whole buckets."""

_MODEL_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
_HEADER_NAME = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+")

# Kept free of Envoy calls so a test can run it under plain LuaJIT and compare it with the server's hash.
_HASH = """\
local bit = require("bit")

-- (a * c) mod 2^32 for a, c in [0, 2^32), exact in doubles: split a into 16-bit halves, every product < 2^48.
local function mul32(a, c)
  local low = a % 65536
  return (low * c + ((a - low) / 65536 * c % 65536) * 65536) % 4294967296
end

-- bit operations return signed 32-bit numbers; the hash works on unsigned ones.
local function u32(x)
  return x % 4294967296
end

local function fnv1a32(s)
  local h = 2166136261
  for i = 1, #s do
    h = mul32(u32(bit.bxor(h, string.byte(s, i))), 16777619)
  end
  return h
end

-- MurmurHash3's finaliser: FNV-1a alone spreads sequential ids unevenly over the buckets.
local function fmix32(h)
  h = mul32(u32(bit.bxor(h, bit.rshift(h, 16))), 0x85EBCA6B)
  h = mul32(u32(bit.bxor(h, bit.rshift(h, 13))), 0xC2B2AE35)
  return u32(bit.bxor(h, bit.rshift(h, 16)))
end

-- The high bits scaled to 0..99 (h * 100 < 2^39, and dividing by 2^32 is exact).
local function sticky_bucket(key)
  return math.floor(fmix32(fnv1a32(key)) * BUCKETS / 4294967296)
end
"""

_FILTER = """\
function envoy_on_request(handle)
  local headers = handle:headers()
  headers:remove(BUCKET_HEADER)
  headers:remove(CALLER_HEADER)
  local path = headers:get(":path")
  local model = path and string.match(path, "^/v2/models/([^/?#]+)")
  local header = model and STICKY_HEADERS[model]
  local key = header and headers:get(header)
  if key ~= nil then
    headers:replace(BUCKET_HEADER, tostring(sticky_bucket(key)))
  end
end
"""


def sticky_headers(models: Iterable[tuple[str, str | None]]) -> dict[str, str]:
    """`{model: header}` for the (model name, sticky header) pairs that have a sticky header."""
    return {name: header.lower() for name, header in models if header is not None}


def lua_source(headers: Mapping[str, str] | None = None) -> str:
    """The gateway's Lua filter: strip client-sent bucket and caller headers, set the bucket of sticky models.

    `headers` maps a model name to its sticky header (`sticky_headers`); models not in it get no bucket and
    take the weighted route. With no mapping the filter only strips.
    """
    table = []
    for model, header in sorted((headers or {}).items()):
        if not _MODEL_NAME.fullmatch(model) or not _HEADER_NAME.fullmatch(header.lower()):
            raise ValueError(f"model {model!r} or sticky header {header!r} is not a valid name")
        table.append(f'  ["{model}"] = "{header.lower()}",')
    constants = "\n".join(
        [
            f"local BUCKETS = {BUCKETS}",
            f'local BUCKET_HEADER = "{BUCKET_HEADER}"',
            f'local CALLER_HEADER = "{CALLER_HEADER}"',
            "local STICKY_HEADERS = {",
            *table,
            "}",
        ]
    )
    return f"-- Generated by stacks/manifests/sticky.py.\n{constants}\n\n{_HASH}\n{_FILTER}"


def bucket_ranges(weights: Sequence[tuple[str, int]]) -> list[tuple[str, int, int]]:
    """`(version, first, end)` bucket ranges, `end` exclusive, of the versions with weight, in version order.

    The server's router lays its buckets out the same way (cumulative weights over versions sorted as
    numbers), so both send a bucket to the same version; weights must sum to `BUCKETS`.
    """
    live = sorted(((v, w) for v, w in weights if w > 0), key=lambda vw: int(vw[0]))
    if sum(w for _, w in live) != BUCKETS:
        raise ValueError(f"weights must sum to {BUCKETS}, got {weights}")
    out, first = [], 0
    for version, weight in live:
        out.append((version, first, first + weight))
        first += weight
    return out


def bucket_regex(first: int, end: int) -> str:
    """An RE2 pattern that matches exactly the decimal buckets `first`..`end - 1` (no leading zeros).

    One alternative per tens digit, consecutive full decades merged (`[2-5][0-9]`), anchored so it means the
    same under a full or a partial match.
    """
    if not 0 <= first < end <= BUCKETS:
        raise ValueError(f"bucket range {first}..{end} is not within 0..{BUCKETS}")
    parts: list[str] = []
    full: list[int] = []  # a run of consecutive two-digit decades covered whole, written as one alternative
    for tens in range(first // 10, (end - 1) // 10 + 1):
        low, high = max(first, tens * 10) % 10, min(end - 1, tens * 10 + 9) % 10
        if tens > 0 and (low, high) == (0, 9):
            full.append(tens)
            continue
        if full:
            parts.append(f"{_digits(full[0], full[-1])}[0-9]")
            full = []
        parts.append(f"{tens if tens else ''}{_digits(low, high)}")
    if full:
        parts.append(f"{_digits(full[0], full[-1])}[0-9]")
    return f"^(?:{'|'.join(parts)})$"


def _digits(low: int, high: int) -> str:
    return str(low) if low == high else f"[{low}-{high}]"
