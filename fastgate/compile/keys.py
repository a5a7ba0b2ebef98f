"""API keys as the data plane sees them: one immutable lookup table per snapshot.

The control plane stores API keys and usage plans in AWS's shapes (see
fastgate.control.model, docs/api-keys.md). This module turns them, once per snapshot,
into a `KeyTable`: presented key value -> `KeyInfo` -> the usage plan that
covers one (API, stage), with its throttle and quota already built as the
throttle module's `ThrottleSettings` / `QuotaSettings`. The snapshot compiles it
into the hot path's `fastgate._core.keys.KeyIndex` (C arrays: digest -> key ->
plan of the stage -> bucket and quota policies), which the ACCESS phase reads;
`check_key()` is the same verdict in Python (tests, tools), and the plan buckets
it names (`bucket_key`s) are the ones the compiled path takes from.

Key values are never kept in clear: the table holds SHA-256 digests and
compares them with hmac.compare_digest. The stored documents also carry an
AES-GCM sealed copy of each value, because AWS's GetApiKey(includeValue) must
return it; `KeySealer` owns that key file. Nothing here logs or formats a
key value.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import string
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from fastgate._core.throttle import QuotaSettings, ThrottleSettings, namespace, quota_period

# ---------------------------------------------------------------- key values

VALUE_ALPHABET = string.ascii_letters + string.digits
GENERATED_LENGTH = 40           # characters, as the keys AWS generates
VALUE_MIN, VALUE_MAX = 20, 128  # characters AWS accepts for a key value
# the gateway response type for a missing, unknown, disabled or unplanned key
INVALID_API_KEY = "INVALID_API_KEY"
HEADER = "x-api-key"            # where a HEADER-source API reads the key


def generate_value() -> str:
    return "".join(secrets.choice(VALUE_ALPHABET) for _ in range(GENERATED_LENGTH))


def check_value(value: str) -> str | None:
    """Why `value` cannot be an API key, or None. Visible ASCII only: it travels in a header."""
    if not isinstance(value, str) or len(value) < VALUE_MIN:
        return f"API Key value should be at least {VALUE_MIN} characters"
    if len(value) > VALUE_MAX:
        return f"API Key value should be at most {VALUE_MAX} characters"
    if any(not 0x21 <= ord(ch) <= 0x7E for ch in value):
        return "API Key value may only contain visible ASCII characters"
    return None


def digest(value: str | bytes) -> bytes:
    """The lookup digest of a key value. Unsalted SHA-256 is enough: generated values
    carry 238 bits and user-given ones at least 20 characters, so the digest cannot be
    inverted, and the data plane needs no secret to compute it."""
    if isinstance(value, str):
        value = value.encode()
    return hashlib.sha256(value).digest()


class KeySealer:
    """AES-256-GCM sealing of key values, so includeValue can return them. The key
    lives in <data_dir>/apikeys.secret, created 0600 on first use; whoever reads the
    database without that file learns no key value."""

    FILE = "apikeys.secret"
    PREFIX = "v1:"

    def __init__(self, data_dir: str | os.PathLike):
        self.path = Path(data_dir) / self.FILE
        self._aead = None

    def _key(self) -> bytes:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = self._create()
        if len(data) != 32:
            raise ValueError(f"{self.path} does not hold a 32-byte key")
        return data

    def _create(self) -> bytes:
        # written under a temporary name, then linked: a concurrent first use by another
        # process either wins the link or reads the complete file the other one linked
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_bytes(32))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, self.path)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
        return self.path.read_bytes()

    def _cipher(self):
        if self._aead is None:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
            self._aead = AESGCM(self._key())
        return self._aead

    def seal(self, key_id: str, value: str) -> str:
        # the key id is the associated data: a sealed value moved to another key fails to open
        nonce = secrets.token_bytes(12)
        sealed = self._cipher().encrypt(nonce, value.encode(), key_id.encode())
        return self.PREFIX + base64.b64encode(nonce + sealed).decode()

    def open(self, key_id: str, sealed: str) -> str:
        if not sealed.startswith(self.PREFIX):
            raise ValueError("unknown sealed key format")
        raw = base64.b64decode(sealed[len(self.PREFIX):])
        return self._cipher().decrypt(raw[:12], raw[12:], key_id.encode()).decode()


# ---------------------------------------------------------------- the table

@dataclass(frozen=True, slots=True)
class PlanInfo:
    """One usage plan as it applies to one key on one (API, stage).

    The settings objects are built once per plan and shared by its keys; the bucket
    keys are this key's own. They are stable 64-bit ids (never 0), the same in every
    worker and across reloads, for BucketTable.try_take_key / QuotaTable.try_take
    (and, as strings, for the Redis engine: `bucket_name`)."""
    plan_id: str
    throttle: ThrottleSettings | None           # the plan's per-key rate and burst
    method_throttles: Mapping[str, ThrottleSettings]  # "/pets/GET" -> per-key override
    quota: QuotaSettings | None                 # per-key requests per DAY / WEEK / MONTH
    bucket_key: int                             # throttle bucket of (plan, key)
    method_bucket_keys: Mapping[str, int]       # "/pets/GET" -> bucket of (plan, key, method)
    quota_key: int                              # quota counter of (plan, key)
    quota_until_s: int | None = None            # an UpdateUsage extension ends here (epoch s)

    def method_limit(self, method_key: str) -> tuple[ThrottleSettings, int] | None:
        """The per-method override for "{resourcePath}/{httpMethod}" and its bucket."""
        settings = self.method_throttles.get(method_key)
        if settings is None:
            return None
        return settings, self.method_bucket_keys[method_key]


@dataclass(frozen=True, slots=True)
class KeyInfo:
    key_id: str
    name: str
    enabled: bool
    customer_id: str | None
    plans: Mapping[tuple[str, str], PlanInfo]   # (api id, stage) -> the plan covering it


def bucket_name(*parts: str) -> str:
    """The name a plan bucket is hashed from (also the Redis key suffix)."""
    return "usageplan:" + ":".join(parts)


def _bucket_key(*parts: str) -> int:
    return namespace(bucket_name(*parts)) or 1   # 0 marks an empty slot in the tables


@dataclass
class KeyTable:
    """digest -> KeyInfo for every API key of a snapshot. Immutable once built."""
    # Entries are bucketed by the digest's first 8 bytes, so a lookup is one dict access
    # plus one compare_digest of the full digest. The dict's timing depends only on the
    # digest of what the client sent, which tells the client nothing about stored keys.
    _by_prefix: dict[bytes, list[tuple[bytes, KeyInfo]]] = field(default_factory=dict)
    by_id: dict[str, KeyInfo] = field(default_factory=dict)
    # epoch s after which the table is stale (an UpdateUsage extension ends): rebuild then
    valid_until_s: int | None = None

    def lookup(self, value: bytes | str | None) -> KeyInfo | None:
        if not value:
            return None
        d = digest(value)
        for stored, info in self._by_prefix.get(d[:8], ()):
            if hmac.compare_digest(stored, d):
                return info
        return None

    def __len__(self) -> int:
        return len(self.by_id)

    def digests(self):
        """(digest, KeyInfo) of every key: what fastgate._core.keys.KeyIndex compiles."""
        for bucket in self._by_prefix.values():
            yield from bucket

    @classmethod
    def from_state(cls, *sources, now_s: int | None = None) -> "KeyTable":
        """The table of one or more sources: a State (the control API's `apikey`,
        `usageplan` and `usageplankey` documents in State.extra), or the config's plain
        data {"api_keys": [...], "usage_plans": [...]} in the shapes docs/api-keys.md
        describes. An id defined by two sources is a ValueError."""
        now_s = int(time.time()) if now_s is None else now_s
        keys: dict[str, dict] = {}          # key id -> {"id","name","enabled","customerId","digest"}
        plans: dict[str, dict] = {}         # plan id -> UsagePlan document
        members: dict[str, dict[str, dict]] = {}   # plan id -> key id -> usage plan key doc
        for src in sources:
            if src is None:
                continue
            if isinstance(src, Mapping):
                _read_config(src, keys, plans, members)
            else:
                _read_state(src, keys, plans, members)
        table = cls()
        per_key: dict[str, dict[tuple[str, str], PlanInfo]] = {k: {} for k in keys}
        for plan_id, plan in sorted(plans.items()):
            throttle = _throttle(plan.get("throttle"))
            quota = _quota(plan.get("quota"), plan.get("_createdDate", now_s))
            for key_id, member in sorted(members.get(plan_id, {}).items()):
                if key_id not in keys:
                    continue
                key_quota, until = quota, None
                ext = member.get("_extension")
                if quota is not None and ext and now_s < ext["until_s"]:
                    # UpdateUsage: this key's limit for the current period only
                    key_quota, until = QuotaSettings(int(ext["limit"]), quota.period, 0, now_s), ext["until_s"]
                    if table.valid_until_s is None or until < table.valid_until_s:
                        table.valid_until_s = until
                for stage in plan.get("apiStages") or ():
                    methods = {m: _throttle(t) for m, t in (stage.get("throttle") or {}).items()}
                    info = PlanInfo(
                        plan_id=plan_id, throttle=throttle,
                        method_throttles={m: s for m, s in methods.items() if s is not None},
                        quota=key_quota,
                        bucket_key=_bucket_key(plan_id, key_id),
                        method_bucket_keys={m: _bucket_key(plan_id, key_id, m) for m in methods},
                        quota_key=_bucket_key(plan_id, key_id, "quota"),
                        quota_until_s=until)
                    # the control API refuses a key in two plans of one stage; config data
                    # could still say so: the first plan (by id) wins, deterministically
                    per_key[key_id].setdefault((stage["apiId"], stage["stage"]), info)
        for key_id, k in keys.items():
            info = KeyInfo(key_id=key_id, name=k.get("name") or "", enabled=bool(k.get("enabled")),
                           customer_id=k.get("customerId"), plans=per_key[key_id])
            table.by_id[key_id] = info
            d = k["digest"]
            table._by_prefix.setdefault(d[:8], []).append((d, info))
        return table


def check_key(table: KeyTable, value: bytes | str | None, api_id: str,
              stage: str) -> tuple[str | None, KeyInfo | None, PlanInfo | None]:
    """The ACCESS phase's verdict for a method that requires an API key: (None, key,
    plan) to go on, else (INVALID_API_KEY, key or None, None) -- missing, unknown,
    disabled, or in no usage plan of this stage. API Gateway answers all four the same
    way: 403 {"message":"Forbidden"}, gateway response type INVALID_API_KEY."""
    key = table.lookup(value)
    if key is None or not key.enabled:
        return INVALID_API_KEY, key, None
    plan = key.plans.get((api_id, stage))
    if plan is None:
        return INVALID_API_KEY, key, None
    return None, key, plan


# ---------------------------------------------------------------- sources

def _add_key(keys: dict, key_id: str, doc: dict, d: bytes) -> None:
    if key_id in keys:
        raise ValueError(f"API key id {key_id!r} is defined twice (config and data dir?)")
    keys[key_id] = {"name": doc.get("name"), "enabled": doc.get("enabled", False),
                    "customerId": doc.get("customerId"), "digest": d}


def _read_state(state, keys, plans, members) -> None:
    extra = getattr(state, "extra", {}) or {}
    for scope in (extra.get("apikey") or {}).values():
        for key_id, doc in scope.items():
            _add_key(keys, key_id, doc, bytes.fromhex(doc["_hash"]))
    for scope in (extra.get("usageplan") or {}).values():
        for plan_id, doc in scope.items():
            if plan_id in plans:
                raise ValueError(f"usage plan id {plan_id!r} is defined twice")
            plans[plan_id] = doc
    for plan_id, docs in (extra.get("usageplankey") or {}).items():
        members.setdefault(plan_id, {}).update(docs)


def _read_config(data: Mapping, keys, plans, members) -> None:
    """The `api_keys:` / `usage_plans:` sections (already validated by the config Structs,
    or plain dicts in the same shapes)."""
    for k in data.get("api_keys") or ():
        k = dict(k)
        key_id = k.get("id") or k["name"]
        if k.get("value") is not None:
            d = digest(k["value"])
        elif k.get("value_sha256"):
            d = bytes.fromhex(k["value_sha256"])
        else:
            raise ValueError(f"API key {key_id!r} needs value or value_sha256")
        k.setdefault("enabled", True)     # a key written into a config is meant to work
        if "customer_id" in k:
            k["customerId"] = k.pop("customer_id")
        _add_key(keys, key_id, k, d)
    for p in data.get("usage_plans") or ():
        plan_id = p.get("id") or p["name"]
        if plan_id in plans:
            raise ValueError(f"usage plan id {plan_id!r} is defined twice")
        plans[plan_id] = {"id": plan_id, "apiStages": [_config_stage(s) for s in p.get("api_stages") or p.get("apiStages") or ()],
                          "throttle": _config_throttle(p.get("throttle")),
                          "quota": p.get("quota"),
                          "_createdDate": p.get("quota_start_s", 0)}
        for key_ref in p.get("keys") or ():
            members.setdefault(plan_id, {})[key_ref] = {"id": key_ref, "type": "API_KEY"}


def _config_throttle(t):
    if not t:
        return None
    return {"rateLimit": t.get("rate_limit", t.get("rateLimit")),
            "burstLimit": t.get("burst_limit", t.get("burstLimit"))}


def _config_stage(s: Mapping) -> dict:
    return {"apiId": s.get("api") or s.get("apiId"), "stage": s["stage"],
            "throttle": {m: _config_throttle(t) for m, t in (s.get("throttle") or {}).items()}}


def _throttle(t) -> ThrottleSettings | None:
    """AWS's ThrottleSettings {rateLimit, burstLimit} as a bucket policy; None if absent.
    A missing member means "not limited on that axis" only together: AWS sets both."""
    if not t or (t.get("rateLimit") is None and t.get("burstLimit") is None):
        return None
    return ThrottleSettings(float(t.get("rateLimit") or 0.0), float(t.get("burstLimit") or 0))


def _quota(q, start_s) -> QuotaSettings | None:
    if not q or q.get("limit") is None:
        return None
    return QuotaSettings(int(q["limit"]), q.get("period") or "DAY", int(q.get("offset") or 0),
                         int(start_s or 0))


def period_bounds(period: str, now_s: int) -> tuple[int, int]:
    """(start, end) epoch s of the quota period containing now_s, UTC calendar periods."""
    _, start, end = quota_period(period, now_s)
    return start, end
