"""API keys: create, import (CSV), get, update, delete; values sealed at rest."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fastgate.control import messages as msg
from fastgate.control.errors import BadRequest, Conflict, NotFound
from fastgate.control.model.base import (
    ModelBase,
    _bad_patch,
    _clone,
    _copy_known,
    _now,
    _page,
    _patch_ops,
)
from fastgate.control.names import new_id

if TYPE_CHECKING:
    from fastgate.control.store import Txn

# AWS's limits on an API key's members (its recorded answers)
NAME_MAX = 1024             # characters
DESCRIPTION_MAX = 125000    # characters


def _check_key_members(p: dict) -> None:
    if isinstance(p.get("name"), str) and len(p["name"]) > NAME_MAX:
        raise BadRequest(msg.API_KEY_NAME_TOO_LONG)
    if isinstance(p.get("description"), str) and len(p["description"]) > DESCRIPTION_MAX:
        raise BadRequest(msg.API_KEY_DESCRIPTION)


def _parse_key_csv(body: bytes) -> tuple[list[tuple[int, dict]], list[str]]:
    """Rows of an API key file: (line number, {name, key, description, enabled, plans})."""
    import csv
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadRequest("The API key file must be UTF-8 text") from None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise BadRequest("The API key file is empty")
    header = [h.strip().lower() for h in next(csv.reader([lines[0]]))]
    if "name" not in header or "key" not in header:
        raise BadRequest("The API key file must have the columns Name and Key")
    rows, warnings = [], []
    for n, line in enumerate(lines[1:], start=2):
        cells = next(csv.reader([line]))
        if len(cells) != len(header):
            # AWS also allows single quotes around a list of usage plan ids
            cells = next(csv.reader([line], quotechar="'"))
        if len(cells) != len(header):
            warnings.append(f"Line {n}: {len(cells)} columns where the header has {len(header)}")
            continue
        row = dict(zip(header, (c.strip() for c in cells)))
        enabled = row.get("enabled", "") or "true"
        if enabled.lower() not in ("true", "false"):
            warnings.append(f"Line {n}: Enabled '{enabled}' is not true or false; taken as true")
            enabled = "true"
        rows.append((n, {"name": row["name"], "key": row["key"],
                         "description": row.get("description", ""),
                         "enabled": enabled.lower() == "true",
                         "plans": [x.strip() for x in row.get("usageplanids", "").split(",") if x.strip()]}))
    return rows, warnings


class ApiKeys(ModelBase):
    # ---- API keys
    #
    # An API key document (kind "apikey") is AWS's ApiKey without its value, plus
    # "_hash" (SHA-256 hex of the value: what the data plane matches) and "_sealed" (the
    # value under AES-GCM, for includeValue; see fastgate.compile.keys.KeySealer). A usage
    # plan (kind "usageplan") is AWS's UsagePlan plus "_createdDate" (its quota's
    # initial period). A key's membership in a plan is a "usageplankey" document
    # scoped by the plan id: {"id", "type"}, plus "_extension" after UpdateUsage.

    _API_KEY_OUT = ("id", "name", "customerId", "description", "enabled", "createdDate",
                    "lastUpdatedDate", "stageKeys", "tags")

    def _sealer(self):
        from fastgate.compile.keys import KeySealer
        if getattr(self, "_key_sealer", None) is None:
            self._key_sealer = KeySealer(Path(self.store.path).parent)
        return self._key_sealer

    def _api_key(self, key_id: str) -> dict:
        key = self.state.extra.get("apikey", {}).get("", {}).get(key_id)
        if key is None:
            raise NotFound(msg.INVALID_API_KEY_ID)
        return key

    def _api_key_view(self, key: dict, include_value: bool) -> dict:
        out = {k: _clone(key[k]) for k in self._API_KEY_OUT if k in key}
        if include_value and "_sealed" in key:
            # a key replicated from another host (fastgate.control.keys_sync) has no sealed value
            # here; one made by a fleet host whose apikeys.secret differs from ours cannot be
            # opened here (docs/fleet.md: give every host the same file): both answer without it
            from cryptography.exceptions import InvalidTag
            try:
                out["value"] = self._sealer().open(key["id"], key["_sealed"])
            except InvalidTag:
                pass
        return out

    def _key_by_hash(self, hex_digest: str) -> dict | None:
        for key in self.state.extra.get("apikey", {}).get("", {}).values():
            if key.get("_hash") == hex_digest:
                return key
        return None

    def _stage_exists(self, api_id, stage) -> bool:
        return (api_id in self.state.apis and stage in self.state.stages.get(api_id, {})) or \
            (api_id, stage) in self.served_stages()

    def _check_stage_keys(self, stage_keys) -> list[str]:
        out = []
        for sk in stage_keys or ():
            api_id, stage = sk.get("restApiId"), sk.get("stageName")
            if not self._stage_exists(api_id, stage):
                raise BadRequest(f"Invalid stage key: restApiId {api_id}, stageName {stage}")
            out.append(f"{api_id}/{stage}")
        return out

    def _new_api_key(self, txn: "Txn", p: dict, value: str) -> dict:
        from fastgate.compile.keys import VALUE_MAX, VALUE_MIN, check_value, digest
        _check_key_members(p)
        if isinstance(value, str) and len(value) < VALUE_MIN:
            raise BadRequest(msg.API_KEY_VALUE_TOO_SHORT)
        if isinstance(value, str) and len(value) > VALUE_MAX:
            raise BadRequest(msg.API_KEY_VALUE_TOO_LONG)
        problem = check_value(value)
        if problem:
            raise BadRequest(problem)
        hex_digest = digest(value).hex()
        if self._key_by_hash(hex_digest) is not None:
            # two keys with one value would make the data plane's lookup ambiguous
            raise Conflict("An API key with the same value already exists")
        keys = self.state.extra.get("apikey", {}).get("", {})
        key_id = new_id(10)
        while key_id in keys:
            key_id = new_id(10)
        now = _now()
        key = {"id": key_id, "enabled": bool(p.get("enabled", False)),
               "createdDate": now, "lastUpdatedDate": now,
               "stageKeys": self._check_stage_keys(p.get("stageKeys"))}
        key.update(_copy_known(p, ("name", "description", "customerId", "tags")))
        if not key.get("name"):
            key.pop("name", None)       # an empty name is no name (AWS's recording)
        key["_hash"] = hex_digest
        key["_sealed"] = self._sealer().seal(key_id, value)
        txn.put("apikey", "", key_id, key)
        return key

    def create_api_key(self, p: dict) -> dict:
        from fastgate.compile.keys import generate_value
        value = p.get("value")
        if value in (None, ""):
            value = generate_value()
        with self.change() as txn:
            key = self._new_api_key(txn, p, value)
        out = self._api_key_view(key, False)
        out["value"] = value       # AWS returns the value on creation
        return out

    def get_api_key(self, p: dict) -> dict:
        self.fresh()
        out = self._api_key_view(self._api_key(p["apiKey"]), bool(p.get("includeValue")))
        out.setdefault("tags", {})
        return out

    def get_api_keys(self, p: dict) -> dict:
        state = self.fresh()
        keys = sorted(state.extra.get("apikey", {}).get("", {}).values(),
                      key=lambda k: (k.get("createdDate", 0), k["id"]))
        if p.get("nameQuery"):
            keys = [k for k in keys if (k.get("name") or "").startswith(p["nameQuery"])]
        if p.get("customerId"):
            keys = [k for k in keys if k.get("customerId") == p["customerId"]]
        page = _page(keys, p)
        page["items"] = [self._api_key_view(k, bool(p.get("includeValues"))) for k in page["items"]]
        return page

    def update_api_key(self, p: dict) -> dict:
        with self.change() as txn:
            key = _clone(self._api_key(p["apiKey"]))
            for op in _patch_ops(p):
                path, value, kind = op["path"], op.get("value"), op["op"]
                if kind == "replace" and path == "/enabled":
                    # anything but "true" reads as false (AWS's recording: "not-a-boolean")
                    key["enabled"] = value is True or str(value).lower() == "true"
                elif kind == "replace" and path in ("/name", "/description", "/customerId"):
                    _check_key_members({path[1:]: value})
                    if value in (None, ""):
                        key.pop(path[1:], None)
                    else:
                        key[path[1:]] = value
                elif kind in ("add", "remove") and path == "/stages":
                    # value "restApiId/stageName", AWS's legacy stage keys
                    api_id, _, stage = (value or "").partition("/")
                    stage_key = self._check_stage_keys([{"restApiId": api_id, "stageName": stage}])[0]
                    keys = key.setdefault("stageKeys", [])
                    if kind == "add" and stage_key not in keys:
                        keys.append(stage_key)
                    elif kind == "remove" and stage_key in keys:
                        keys.remove(stage_key)
                else:
                    raise _bad_patch(op, msg.API_KEY_PATCH_PATHS)
            key["lastUpdatedDate"] = _now()
            txn.put("apikey", "", key["id"], key)
        out = self._api_key_view(key, False)
        out.setdefault("tags", {})      # GetApiKey and UpdateApiKey show {} (AWS's recordings)
        return out

    def delete_api_key(self, p: dict) -> dict:
        with self.change() as txn:
            key = self._api_key(p["apiKey"])
            txn.delete("apikey", "", key["id"])
            for plan_id, members in self.state.extra.get("usageplankey", {}).items():
                if key["id"] in members:
                    txn.delete("usageplankey", plan_id, key["id"])
        return {}

    def import_api_keys(self, p: dict) -> dict:
        """AWS's API key file format: CSV, header names case-insensitive, columns in any
        order, Name and Key required; Description, Enabled (default true) and
        UsagePlanIds ("id1,id2", quoted with " or ') optional; others ignored. A value
        imported again overwrites the key that has it."""
        from fastgate.compile.keys import check_value, digest
        if p.get("format") != "csv":
            raise BadRequest(f"Invalid format '{p.get('format')}': the only format is csv")
        rows, warnings = _parse_key_csv(p.get("body") or b"")
        if warnings and p.get("failOnWarnings"):
            raise BadRequest("Warnings found during import: " + "; ".join(warnings))
        ids = []
        with self.change() as txn:
            plans = self.state.extra.get("usageplan", {}).get("", {})
            # this file's keys and memberships so far: the in-memory State sees the
            # transaction's writes only after commit (and never, if it rolls back)
            imported: dict[str, dict] = {}
            members = {pid: dict(m) for pid, m in self.state.extra.get("usageplankey", {}).items()}
            for line, row in rows:
                problem = check_value(row["key"])
                if problem or not row["name"] or len(row["name"]) > 1024:
                    msg = problem or "Name must be 1 to 1024 characters"
                    if p.get("failOnWarnings"):
                        raise BadRequest(f"Line {line}: {msg}")
                    warnings.append(f"Line {line}: {msg}; the key was not imported")
                    continue
                unknown = [pid for pid in row["plans"] if pid not in plans]
                if unknown:
                    raise NotFound(f"Line {line}: Invalid Usage Plan ID specified: {unknown[0]}")
                hex_digest = digest(row["key"]).hex()
                existing = imported.get(hex_digest) or self._key_by_hash(hex_digest)
                fields = {"name": row["name"], "enabled": row["enabled"]}
                if row["description"]:
                    fields["description"] = row["description"]
                if existing is not None:
                    key = _clone(existing)
                    key.pop("description", None)
                    key.update(fields)
                    key["lastUpdatedDate"] = _now()
                    txn.put("apikey", "", key["id"], key)
                else:
                    key = self._new_api_key(txn, fields, row["key"])
                imported[hex_digest] = key
                for plan_id in row["plans"]:
                    if key["id"] in members.get(plan_id, {}):
                        continue    # already in: keep its membership (and any UpdateUsage grant)
                    self._check_plan_stages_free(plans[plan_id], key["id"], members, skip_plan=plan_id)
                    txn.put("usageplankey", plan_id, key["id"], {"id": key["id"], "type": "API_KEY"})
                    members.setdefault(plan_id, {})[key["id"]] = {"id": key["id"], "type": "API_KEY"}
                if key["id"] not in ids:
                    ids.append(key["id"])
        out = {"ids": ids}
        if warnings:
            out["warnings"] = warnings
        return out
