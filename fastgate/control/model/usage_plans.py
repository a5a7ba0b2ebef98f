"""Usage plans, their keys, and usage (GetUsage, UpdateUsage)."""

from __future__ import annotations

import time

import orjson

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
    _require_str,
    _unescape_pointer,
)
from fastgate.control.names import HTTP_METHODS, new_id
from fastgate.observability.log import log

QUOTA_PERIODS = ("DAY", "WEEK", "MONTH")


def _check_throttle(t, what: str) -> dict:
    """AWS's ThrottleSettings {burstLimit: int >= 0, rateLimit: double >= 0}."""
    if not isinstance(t, dict):
        raise BadRequest(f"Invalid {what}: expected burstLimit and rateLimit")
    out = {}
    if t.get("burstLimit") is not None:
        burst = t["burstLimit"]
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 0:
            raise BadRequest(f"Invalid {what}: burstLimit must be an integer >= 0")
        out["burstLimit"] = burst
    if t.get("rateLimit") is not None:
        rate = t["rateLimit"]
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < float("inf"):
            raise BadRequest(f"Invalid {what}: rateLimit must be a number >= 0")
        out["rateLimit"] = float(rate)
    return out


def _check_quota(q) -> dict:
    """AWS's QuotaSettings {limit, offset, period}: a period of DAY, WEEK or MONTH and a
    limit are required; the offset is taken off the limit in the plan's first period."""
    if not isinstance(q, dict):
        raise BadRequest("Invalid quota: expected limit, offset and period")
    if q.get("period") not in QUOTA_PERIODS:
        raise BadRequest(f"Invalid quota period '{q.get('period')}': must be DAY, WEEK or MONTH")
    limit, offset = q.get("limit"), q.get("offset", 0) or 0
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise BadRequest("Invalid quota: limit must be an integer >= 0")
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= limit:
        raise BadRequest("Invalid quota: offset must be an integer from 0 to the limit")
    return {"limit": limit, "offset": offset, "period": q["period"]}


def _check_method_keys(throttles: dict) -> dict:
    """Per-method throttle keys are "{resourcePath}/{httpMethod}": "/pets/GET", "//GET"
    for the root resource, "*" for any method."""
    for m in throttles:
        path, _, method = str(m).rpartition("/")
        if not path.startswith("/") or method not in HTTP_METHODS + ("*",):
            raise BadRequest(f"Invalid method throttle key '{m}': use "
                             "{resourcePath}/{httpMethod}, e.g. /pets/GET")
    return throttles


class UsagePlans(ModelBase):
    # ---- usage plans

    def _usage_plan(self, plan_id: str) -> dict:
        plan = self.state.extra.get("usageplan", {}).get("", {}).get(plan_id)
        if plan is None:
            raise NotFound(msg.INVALID_USAGE_PLAN_ID)
        return plan

    @staticmethod
    def _usage_plan_view(plan: dict) -> dict:
        return {k: _clone(v) for k, v in plan.items() if not k.startswith("_")}

    def _check_api_stage(self, stage: dict, plan_id: str | None = None) -> dict:
        """An API stage of a plan, checked; plan_id None on CreateUsagePlan."""
        api_id, name = stage.get("apiId"), stage.get("stage")
        if not api_id or not name or not self._stage_exists(api_id, name):
            if plan_id is None:     # CreateUsagePlan: AWS's text with its %s left in
                raise BadRequest(msg.API_STAGE_UNKNOWN_ON_CREATE)
            raise BadRequest(msg.API_STAGE_NOT_IN_PLAN.format(api_id=api_id, stage=name,
                                                              plan_id=plan_id))
        out = {"apiId": api_id, "stage": name}
        if stage.get("throttle"):
            out["throttle"] = {m: _check_throttle(t, f"throttle {m}")
                               for m, t in _check_method_keys(stage["throttle"]).items()}
        return out

    def _check_plan_stages_free(self, plan: dict, key_id: str, members: dict,
                                skip_plan: str | None = None) -> None:
        """AWS: an API key cannot be in two usage plans that share an API stage."""
        mine = {(s["apiId"], s["stage"]) for s in plan.get("apiStages") or ()}
        for other_id, other_members in members.items():
            if other_id == (skip_plan or plan.get("id")) or key_id not in other_members:
                continue
            other = self.state.extra.get("usageplan", {}).get("", {}).get(other_id) or {}
            for s in other.get("apiStages") or ():
                if (s["apiId"], s["stage"]) in mine:
                    raise Conflict(f"Usage Plan {plan['id']} cannot be added because API Key "
                                   f"{key_id} cannot reference multiple Usage Plans with the same "
                                   f"API Stage: {s['apiId']}:{s['stage']}")

    def create_usage_plan(self, p: dict) -> dict:
        name = _require_str(p, "name", "name")
        with self.change() as txn:
            plans = self.state.extra.get("usageplan", {}).get("", {})
            plan_id = new_id(6)
            while plan_id in plans:
                plan_id = new_id(6)
            plan = {"id": plan_id, "name": name, "apiStages": []}
            for s in p.get("apiStages") or ():
                stage = self._check_api_stage(s)
                if any((x["apiId"], x["stage"]) == (stage["apiId"], stage["stage"]) for x in plan["apiStages"]):
                    raise BadRequest(f"Duplicate API Stage {stage['apiId']}:{stage['stage']}")
                plan["apiStages"].append(stage)
            if p.get("throttle") is not None:
                plan["throttle"] = _check_throttle(p["throttle"], "throttle")
            if p.get("quota") is not None:
                plan["quota"] = _check_quota(p["quota"])
            plan.update(_copy_known(p, ("description", "tags")))
            plan["_createdDate"] = _now()
            txn.put("usageplan", "", plan_id, plan)
        return self._usage_plan_view(plan)

    def get_usage_plan(self, p: dict) -> dict:
        self.fresh()
        out = self._usage_plan_view(self._usage_plan(p["usagePlanId"]))
        out.setdefault("tags", {})      # GetUsagePlan and UpdateUsagePlan show {} (AWS's recordings)
        return out

    def get_usage_plans(self, p: dict) -> dict:
        state = self.fresh()
        plans = sorted(state.extra.get("usageplan", {}).get("", {}).values(),
                       key=lambda x: (x.get("_createdDate", 0), x["id"]))
        if p.get("keyId"):
            self._api_key(p["keyId"])
            members = state.extra.get("usageplankey", {})
            plans = [x for x in plans if p["keyId"] in members.get(x["id"], {})]
        return _page([self._usage_plan_view(x) for x in plans], p)

    def update_usage_plan(self, p: dict) -> dict:
        with self.change() as txn:
            plan = _clone(self._usage_plan(p["usagePlanId"]))
            for op in _patch_ops(p):
                self._patch_usage_plan(plan, op)
            # "/quota/limit" then "/quota/period" is a valid pair: check the end result
            if plan.get("throttle") is not None:
                plan["throttle"] = _check_throttle(plan["throttle"], "throttle")
            if plan.get("quota") is not None:
                plan["quota"] = _check_quota(plan["quota"])
            members = self.state.extra.get("usageplankey", {})
            for key_id in members.get(plan["id"], {}):
                self._check_plan_stages_free(plan, key_id, members)
            txn.put("usageplan", "", plan["id"], plan)
        out = self._usage_plan_view(plan)
        out.setdefault("tags", {})
        return out

    def _patch_usage_plan(self, plan: dict, op: dict) -> None:
        kind, path, value = op["op"], op["path"], op.get("value")
        if kind == "replace" and path in ("/name", "/description", "/productCode"):
            if path == "/name" and not value:
                raise BadRequest("name must not be blank")
            if value in (None, ""):
                plan.pop(path[1:], None)
            else:
                plan[path[1:]] = value
            return
        if path == "/apiStages" and kind in ("add", "remove"):
            api_id, colon, stage_name = (value or "").partition(":")
            if not colon:
                raise BadRequest(msg.INVALID_API_STAGE)
            stages = plan.setdefault("apiStages", [])
            found = [s for s in stages if (s["apiId"], s["stage"]) == (api_id, stage_name)]
            if kind == "add":
                if found:
                    raise Conflict(f"API Stage {value} is already associated with usage plan {plan['id']}")
                stages.append(self._check_api_stage({"apiId": api_id, "stage": stage_name}, plan["id"]))
            elif not found:
                raise NotFound(msg.API_STAGE_NOT_IN_PLAN.format(api_id=api_id, stage=stage_name,
                                                                plan_id=plan["id"]))
            else:
                stages.remove(found[0])
            return
        if path.startswith("/apiStages/"):
            self._patch_stage_throttle(plan, op, path[len("/apiStages/"):])
            return
        for section, members in (("throttle", ("rateLimit", "burstLimit")),
                                 ("quota", ("limit", "offset", "period"))):
            if kind == "remove" and path == f"/{section}":
                plan.pop(section, None)
                return
            if kind in ("replace", "add") and path.startswith(f"/{section}/") and path[len(section) + 2:] in members:
                member = path[len(section) + 2:]
                current = dict(plan.get(section) or {})
                try:
                    current[member] = (value if member == "period" else
                                       float(value) if member == "rateLimit" else int(value))
                except (TypeError, ValueError):
                    raise BadRequest(f"Invalid value '{value}' for {path}") from None
                plan[section] = current     # checked whole after the last operation
                return
        raise _bad_patch(op)

    def _patch_stage_throttle(self, plan: dict, op: dict, rest: str) -> None:
        # "{apiId}:{stage}/throttle[/{resourcePath}/{httpMethod}[/rateLimit|/burstLimit]]";
        # the resource path keeps its slashes ("/apiStages/a:b/throttle//pets/GET/rateLimit")
        # or comes escaped as in JSON Pointer ("~1pets")
        kind, value = op["op"], op.get("value")
        stage_id, _, tail = rest.partition("/")
        api_id, _, stage_name = stage_id.partition(":")
        tail = tail.strip()
        if tail != "throttle" and not tail.startswith("throttle/"):
            # "/apiStages/{apiId}:{stage}" alone is no path (AWS lists those of remove)
            raise _bad_patch(op, {"remove": msg.USAGE_PLAN_REMOVE_PATHS})
        stage = next((s for s in plan.get("apiStages") or ()
                      if (s["apiId"], s["stage"]) == (api_id, stage_name)), None)
        if stage is None:
            raise NotFound(msg.API_STAGE_NOT_IN_PLAN.format(api_id=api_id, stage=stage_name,
                                                            plan_id=plan["id"]))
        if tail == "throttle":
            if kind == "remove":
                stage.pop("throttle", None)
                return
            if kind == "replace":
                try:
                    doc = orjson.loads(value or "{}")
                    if isinstance(doc, str):
                        doc = orjson.loads(doc)      # the AWS CLI example double-quotes it
                except orjson.JSONDecodeError:
                    raise BadRequest(f"Invalid throttle map '{value}'") from None
                if not isinstance(doc, dict):
                    raise BadRequest(f"Invalid throttle map '{value}'")
                stage["throttle"] = {m: _check_throttle(t, f"throttle {m}")
                                     for m, t in _check_method_keys(doc).items()}
                if not stage["throttle"]:
                    del stage["throttle"]
                return
            raise _bad_patch(op)
        method_path = _unescape_pointer(tail[len("throttle/"):])
        member = None
        for m in ("rateLimit", "burstLimit"):
            if method_path.endswith("/" + m):
                member, method_path = m, method_path[:-len(m) - 1]
        if not method_path.startswith("/"):
            method_path = "/" + method_path
        _check_method_keys({method_path: None})
        throttles = stage.setdefault("throttle", {})
        if kind == "remove" and member is None:
            if throttles.pop(method_path, None) is None:
                raise NotFound(f"No throttle settings for {method_path}")
        elif kind in ("replace", "add") and member is not None:
            entry = dict(throttles.get(method_path) or {})
            try:
                entry[member] = float(value) if member == "rateLimit" else int(value)
            except (TypeError, ValueError):
                raise BadRequest(f"Invalid value '{value}' for {op['path']}") from None
            throttles[method_path] = _check_throttle(entry, f"throttle {method_path}")
        else:
            raise _bad_patch(op)
        if not throttles:
            del stage["throttle"]

    def delete_usage_plan(self, p: dict) -> dict:
        with self.change() as txn:
            plan = self._usage_plan(p["usagePlanId"])
            if plan.get("apiStages"):
                # AWS refuses too: the stages must be removed from the plan first
                raise BadRequest(f"Cannot delete Usage Plan {plan['id']} because there are API "
                                 "Stages associated with it. Remove the API Stages first.")
            txn.delete("usageplan", "", plan["id"])
            for key_id in self.state.extra.get("usageplankey", {}).get(plan["id"], {}):
                txn.delete("usageplankey", plan["id"], key_id)
        return {}

    # ---- usage plan keys

    def _usage_plan_key_view(self, key: dict) -> dict:
        out = {"id": key["id"], "type": "API_KEY"}
        if "_sealed" in key:
            out["value"] = self._sealer().open(key["id"], key["_sealed"])
        if key.get("name"):
            out["name"] = key["name"]
        return out

    def create_usage_plan_key(self, p: dict) -> dict:
        if p["keyType"] != "API_KEY":
            raise BadRequest(f"Invalid key type '{p['keyType']}': the only type is API_KEY")
        with self.change() as txn:
            plan = self._usage_plan(p["usagePlanId"])
            key = self._api_key(p["keyId"])
            members = self.state.extra.get("usageplankey", {})
            if key["id"] in members.get(plan["id"], {}):
                raise Conflict(f"Usage Plan {plan['id']} already contains API Key {key['id']}")
            self._check_plan_stages_free(plan, key["id"], members)
            txn.put("usageplankey", plan["id"], key["id"], {"id": key["id"], "type": "API_KEY"})
        return self._usage_plan_key_view(key)

    def _plan_member(self, plan_id: str, key_id: str) -> tuple[dict, dict]:
        plan = self._usage_plan(plan_id)
        member = self.state.extra.get("usageplankey", {}).get(plan["id"], {}).get(key_id)
        if member is None:
            raise NotFound("Invalid Usage Plan Key identifier specified")
        return plan, member

    def get_usage_plan_key(self, p: dict) -> dict:
        self.fresh()
        self._plan_member(p["usagePlanId"], p["keyId"])
        return self._usage_plan_key_view(self._api_key(p["keyId"]))

    def get_usage_plan_keys(self, p: dict) -> dict:
        state = self.fresh()
        plan = self._usage_plan(p["usagePlanId"])
        keys = state.extra.get("apikey", {}).get("", {})
        items = [keys[k] for k in state.extra.get("usageplankey", {}).get(plan["id"], {}) if k in keys]
        items.sort(key=lambda k: (k.get("createdDate", 0), k["id"]))
        if p.get("nameQuery"):
            items = [k for k in items if (k.get("name") or "").startswith(p["nameQuery"])]
        page = _page(items, p)
        page["items"] = [self._usage_plan_key_view(k) for k in page["items"]]
        return page

    def delete_usage_plan_key(self, p: dict) -> dict:
        with self.change() as txn:
            plan, member = self._plan_member(p["usagePlanId"], p["keyId"])
            txn.delete("usageplankey", plan["id"], member["id"])
        return {}

    # ---- usage

    # config `redis:` of the gateway serving this model (set by the admin process): usage
    # is then summed over every host that pushes to that Redis (fastgate.control.usage_redis)
    usage_redis = None

    def _usage_store(self):
        from fastgate.control.usage import UsageStore
        if getattr(self, "_usage", None) is None:
            self._usage = UsageStore(self.store.path)
        return self._usage

    def _usage_rows(self, end: str, key_ids: list[str]) -> list[tuple]:
        from fastgate.control.usage_redis import all_hosts_rows
        return all_hosts_rows(self._usage_store(), self.usage_redis, None, end, key_ids,
                              warn=log)

    @staticmethod
    def _plan_stages(plan: dict) -> set[tuple[str, str]]:
        return {(s["apiId"], s["stage"]) for s in plan.get("apiStages") or ()}

    def _quota_limit_for(self, plan: dict, now_s: int):
        """(key id, period start) -> that period's quota limit for the key: the plan's,
        less its offset in the plan's first period, or an UpdateUsage extension."""
        from fastgate.compile.keys import period_bounds
        quota = plan["quota"]
        members = self.state.extra.get("usageplankey", {}).get(plan["id"], {})
        first_start, _ = period_bounds(quota["period"], int(plan.get("_createdDate", now_s)))

        def limit_for(key_id: str, period_start: int) -> int:
            ext = (members.get(key_id) or {}).get("_extension")
            if ext and ext["period_start_s"] == period_start:
                return int(ext["limit"])
            if period_start == first_start:
                return max(quota["limit"] - quota.get("offset", 0), 0)
            return quota["limit"]
        return limit_for

    def get_usage(self, p: dict) -> dict:
        from fastgate.control.usage import parse_day, usage_values
        state = self.fresh()
        plan = self._usage_plan(p["usagePlanId"])
        try:
            start = parse_day(p["startDate"], "startDate")
            end = parse_day(p["endDate"], "endDate")
        except ValueError as e:
            raise BadRequest(str(e)) from None
        if end < start:
            raise BadRequest("The end date must not be before the start date")
        if (end - start).days > 90:
            # AWS keeps 90 days of usage and refuses longer windows
            raise BadRequest("The usage data can be queried for at most 90 days at once")
        members = sorted(state.extra.get("usageplankey", {}).get(plan["id"], {}))
        if p.get("keyId"):
            if p["keyId"] not in members:
                raise NotFound(msg.INVALID_API_KEY_ID)
            members = [p["keyId"]]
        page = _page(members, p)
        rows = self._usage_rows(p["endDate"], page["items"])
        values = usage_values(rows, page["items"], start, end, plan.get("quota"),
                              self._quota_limit_for(plan, int(time.time())) if plan.get("quota") else None,
                              self._plan_stages(plan))
        out = {"usagePlanId": plan["id"], "startDate": p["startDate"], "endDate": p["endDate"],
               "items": values}
        if "position" in page:
            out["position"] = page["position"]
        return out

    def update_usage(self, p: dict) -> dict:
        """Grant (or take back) quota for the current period of one key: replace
        /remaining. Stored as that key's limit for this period; the data plane's quota
        for the key follows on the next snapshot and falls back to the plan's at the
        period's end (KeyTable.valid_until_s)."""
        from fastgate.compile.keys import period_bounds
        from fastgate.control.usage import quota_used_by_day, utc_day
        self._usage_store()     # opened (tables created) before the write lock is taken
        with self.change() as txn:
            plan, member = self._plan_member(p["usagePlanId"], p["keyId"])
            quota = plan.get("quota")
            if not quota:
                raise BadRequest(f"Usage Plan {plan['id']} has no quota to extend")
            now = int(time.time())
            member = _clone(member)
            for op in _patch_ops(p):
                if op["op"] != "replace" or op["path"] != "/remaining":
                    raise _bad_patch(op)
                try:
                    remaining = int(op.get("value"))
                except (TypeError, ValueError):
                    raise BadRequest(f"Invalid value '{op.get('value')}' for /remaining") from None
                if remaining < 0:
                    raise BadRequest("remaining must not be negative")
                start, end = period_bounds(quota["period"], now)
                daily = quota_used_by_day(self._usage_rows(utc_day(now), [member["id"]]),
                                          self._plan_stages(plan)).get(member["id"], {})
                used = sum(n for d, n in daily.items() if d >= utc_day(start))
                member["_extension"] = {"limit": used + remaining, "period_start_s": start,
                                        "until_s": end}
            txn.put("usageplankey", plan["id"], member["id"], member)
        today = time.strftime("%Y-%m-%d", time.gmtime())
        return self.get_usage({"usagePlanId": plan["id"], "keyId": member["id"],
                               "startDate": today, "endDate": today})
