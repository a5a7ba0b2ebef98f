"""Deployments and stages: snapshots of an API, stage variables, canaries, method settings."""

from __future__ import annotations

from fastgate.control import messages as msg
from fastgate.control.errors import BadRequest, Conflict
from fastgate.control.model.base import (
    ModelBase,
    _bad_patch,
    _bool_value,
    _check_percent,
    _check_variables,
    _clone,
    _copy_known,
    _now,
    _page,
    _patch_ops,
    _require_str,
    _unescape_pointer,
)
from fastgate.control.model.restapis import _new_stage, api_summary
from fastgate.control.names import STAGE_NAME, new_id


class Stages(ModelBase):
    # ---- deployments

    @staticmethod
    def _deployment_view(dep: dict, embed_summary: bool = True) -> dict:
        out = {k: _clone(dep[k]) for k in ("id", "description", "createdDate") if k in dep}
        if embed_summary and "apiSummary" in dep:
            out["apiSummary"] = _clone(dep["apiSummary"])
        return out

    def create_deployment(self, p: dict) -> dict:
        api_id = p["restApiId"]
        stage_name = p.get("stageName")
        canary = p.get("canarySettings")
        if canary is not None and not stage_name:
            raise BadRequest(msg.CANARY_NEEDS_STAGE.format(value="null" if stage_name is None else ""))
        if stage_name is not None and not STAGE_NAME.match(stage_name):
            raise BadRequest(msg.STAGE_NAME_INVALID)
        variables = _check_variables(p.get("variables"))
        with self.change() as txn:
            api = self._api(api_id)
            if canary is not None and stage_name not in self.state.stages.get(api_id, {}):
                raise BadRequest(msg.CANARY_STAGE_MISSING.format(stage=stage_name))
            methods = [(r["path"], m, method) for r in api.get("resources", ())
                       for m, method in (r.get("resourceMethods") or {}).items()]
            if not methods:
                raise BadRequest(msg.NO_METHODS)
            for path, m, method in methods:
                if "methodIntegration" not in method:
                    raise BadRequest(f"{msg.NO_INTEGRATION} ({m} {path})")
            dep = {"id": new_id(6), "createdDate": _now(), "apiSummary": api_summary(api),
                   "api": _clone(api)}
            while dep["id"] in self.state.deployments.get(api_id, {}):
                dep["id"] = new_id(6)
            if p.get("description") is not None:
                dep["description"] = p["description"]
            txn.put("deployment", api_id, dep["id"], dep)
            if stage_name:
                stage = self.state.stages.get(api_id, {}).get(stage_name)
                now = _now()
                if canary is not None:
                    # a canary deployment: the stage keeps its deployment, the new one
                    # takes percentTraffic of the requests (AWS "Create a canary release")
                    stage = _clone(stage)
                    settings = {"deploymentId": dep["id"],
                                "percentTraffic": _check_percent(canary.get("percentTraffic", 0.0)),
                                "useStageCache": bool(canary.get("useStageCache", False))}
                    overrides = _check_variables(canary.get("stageVariableOverrides"),
                                                 "stageVariableOverrides")
                    if overrides:
                        settings["stageVariableOverrides"] = overrides
                    stage["canarySettings"] = settings
                elif stage is None:
                    stage = _new_stage(stage_name, dep["id"], p, variables)
                    if p.get("stageDescription") is not None:
                        stage["description"] = p["stageDescription"]
                else:
                    stage = _clone(stage)
                    stage["deploymentId"] = dep["id"]
                    if variables:
                        stage.setdefault("variables", {}).update(variables)
                    if p.get("stageDescription") is not None:
                        stage["description"] = p["stageDescription"]
                stage["lastUpdatedDate"] = now
                txn.put("stage", api_id, stage_name, stage)
        return self._deployment_view(dep, embed_summary=False)

    def get_deployment(self, p: dict) -> dict:
        self.fresh()
        self._api(p["restApiId"])
        dep = self._deployment(p["restApiId"], p["deploymentId"])
        return self._deployment_view(dep, "apisummary" in [e.lower() for e in p.get("embed") or ()])

    def get_deployments(self, p: dict) -> dict:
        self.fresh()
        self._api(p["restApiId"])
        deps = sorted(self.state.deployments.get(p["restApiId"], {}).values(),
                      key=lambda d: (d["createdDate"], d["id"]))
        return _page([self._deployment_view(d, False) for d in deps], p)

    def update_deployment(self, p: dict) -> dict:
        with self.change() as txn:
            self._api(p["restApiId"])
            dep = _clone(self._deployment(p["restApiId"], p["deploymentId"]))
            for op in _patch_ops(p):
                if op["op"] == "replace" and op["path"] == "/description":
                    dep["description"] = op.get("value") or ""
                else:
                    raise _bad_patch(op)
            txn.put("deployment", p["restApiId"], dep["id"], dep)
        return self._deployment_view(dep, False)

    def delete_deployment(self, p: dict) -> dict:
        api_id, dep_id = p["restApiId"], p["deploymentId"]
        with self.change() as txn:
            self._api(api_id)
            self._deployment(api_id, dep_id)
            for stage in self.state.stages.get(api_id, {}).values():
                if stage.get("deploymentId") == dep_id or \
                        (stage.get("canarySettings") or {}).get("deploymentId") == dep_id:
                    raise BadRequest(msg.DEPLOYMENT_IN_USE)
            txn.delete("deployment", api_id, dep_id)
        return {}

    # ---- stages

    def create_stage(self, p: dict) -> dict:
        api_id, name = p["restApiId"], _require_str(p, "stageName", "stageName")
        if not STAGE_NAME.match(name):
            raise BadRequest(msg.STAGE_NAME_INVALID)
        variables = _check_variables(p.get("variables"))
        with self.change() as txn:
            self._api(api_id)
            self._deployment(api_id, _require_str(p, "deploymentId", "deploymentId"))
            if name in self.state.stages.get(api_id, {}):
                raise Conflict(msg.STAGE_EXISTS)
            stage = _new_stage(name, p["deploymentId"], p, variables)
            stage.update(_copy_known(p, ("description", "cacheClusterSize", "documentationVersion", "tags")))
            if p.get("canarySettings") is not None:
                stage["canarySettings"] = self._canary_settings(api_id, p["canarySettings"], p["deploymentId"])
            txn.put("stage", api_id, name, stage)
        return _clone(stage)

    def _canary_settings(self, api_id: str, c: dict, default_dep: str) -> dict:
        dep_id = c.get("deploymentId") or default_dep
        if dep_id not in self.state.deployments.get(api_id, {}):
            raise BadRequest(msg.CANARY_DEPLOYMENT_MISSING)
        out = {"deploymentId": dep_id, "percentTraffic": _check_percent(c.get("percentTraffic", 0.0)),
               "useStageCache": bool(c.get("useStageCache", False))}
        overrides = _check_variables(c.get("stageVariableOverrides"), "stageVariableOverrides")
        if overrides:
            out["stageVariableOverrides"] = overrides
        return out

    def get_stage(self, p: dict) -> dict:
        self.fresh()
        self._api(p["restApiId"])
        return _clone(self._stage(p["restApiId"], p["stageName"]))

    def get_stages(self, p: dict) -> dict:
        self.fresh()
        self._api(p["restApiId"])
        stages = sorted(self.state.stages.get(p["restApiId"], {}).values(),
                        key=lambda s: s["stageName"])
        if p.get("deploymentId"):
            stages = [s for s in stages if s.get("deploymentId") == p["deploymentId"]]
        return {"item": [_clone(s) for s in stages]}

    def delete_stage(self, p: dict) -> dict:
        api_id, name = p["restApiId"], p["stageName"]
        with self.change() as txn:
            self._api(api_id)
            self._stage(api_id, name)
            for domain, mappings in self.state.mappings.items():
                for base, m in mappings.items():
                    if m.get("restApiId") == api_id and m.get("stage") == name:
                        raise BadRequest(f"Cannot delete stage '{name}': base path mapping "
                                         f"'{base}' of domain name '{domain}' refers to it.")
            txn.delete("stage", api_id, name)
        return {}

    def update_stage(self, p: dict) -> dict:
        api_id = p["restApiId"]
        with self.change() as txn:
            self._api(api_id)
            stage = _clone(self._stage(api_id, p["stageName"]))
            for op in _patch_ops(p):
                self._patch_stage(api_id, stage, op)
            stage["lastUpdatedDate"] = _now()
            txn.put("stage", api_id, stage["stageName"], stage)
        return _clone(stage)

    # Stage members a plain `replace` sets, with how the string value is read
    _STAGE_SCALARS = {"description": str, "deploymentId": str, "cacheClusterSize": str,
                      "clientCertificateId": str, "documentationVersion": str,
                      "webAclArn": str, "cacheClusterEnabled": bool, "tracingEnabled": bool}
    # method setting patch paths (after /{resource}/{method}/) -> (MethodSetting member, type)
    _METHOD_SETTINGS = {
        "metrics/enabled": ("metricsEnabled", bool),
        "logging/loglevel": ("loggingLevel", str),
        "logging/dataTrace": ("dataTraceEnabled", bool),
        "throttling/burstLimit": ("throttlingBurstLimit", int),
        "throttling/rateLimit": ("throttlingRateLimit", float),
        "caching/enabled": ("cachingEnabled", bool),
        "caching/ttlInSeconds": ("cacheTtlInSeconds", int),
        "caching/dataEncrypted": ("cacheDataEncrypted", bool),
        "caching/requireAuthorizationForCacheControl": ("requireAuthorizationForCacheControl", bool),
        "caching/unauthorizedCacheControlHeaderStrategy": ("unauthorizedCacheControlHeaderStrategy", str),
    }
    _METHOD_SETTING_DEFAULTS = {"metricsEnabled": False, "loggingLevel": "OFF",
                                "dataTraceEnabled": False, "throttlingBurstLimit": 5000,
                                "throttlingRateLimit": 10000.0, "cachingEnabled": False,
                                "cacheTtlInSeconds": 300, "cacheDataEncrypted": False,
                                "requireAuthorizationForCacheControl": True,
                                "unauthorizedCacheControlHeaderStrategy": "SUCCEED_WITH_RESPONSE_HEADER"}

    def _patch_stage(self, api_id: str, stage: dict, op: dict) -> None:
        kind, path, value = op["op"], op["path"], op.get("value")
        parts = path[1:].split("/")
        top = parts[0]
        if kind == "copy":
            src = op.get("from")
            canary = stage.get("canarySettings")
            if src == "/canarySettings/deploymentId" and path == "/deploymentId":
                if not canary:
                    raise BadRequest(msg.NO_CANARY)
                stage["deploymentId"] = canary["deploymentId"]
            elif src == "/canarySettings/stageVariableOverrides" and path == "/variables":
                if not canary:
                    raise BadRequest(msg.NO_CANARY)
                stage.setdefault("variables", {}).update(canary.get("stageVariableOverrides") or {})
            else:
                raise BadRequest(msg.STAGE_COPY_INVALID.format(path=path, src=src))
            return
        if len(parts) == 1 and top in self._STAGE_SCALARS and kind == "replace":
            if top == "deploymentId":
                self._deployment(api_id, value or "")
            reader = self._STAGE_SCALARS[top]
            stage[top] = _bool_value(value, path) if reader is bool else (value or "")
            return
        if top == "variables" and len(parts) >= 2 and kind in ("add", "replace", "remove"):
            name = _unescape_pointer("/".join(parts[1:]))
            variables = stage.setdefault("variables", {})
            if kind == "remove":
                variables.pop(name, None)
            else:
                variables.update(_check_variables({name: value if value is not None else ""}))
            if not variables:
                del stage["variables"]
            return
        if top == "accessLogSettings":
            # AWS's rules and texts (its recordings): add or replace either member, never
            # empty; remove only the whole of accessLogSettings
            if kind == "remove" and len(parts) == 1:
                stage.pop("accessLogSettings", None)
                return
            if kind == "remove":
                raise BadRequest(msg.METHOD_SETTING_REMOVE_NOTHING.format(setting="/".join(parts)))
            if kind in ("add", "replace") and len(parts) == 2 and parts[1] in ("destinationArn", "format"):
                if not value:
                    raise BadRequest(msg.ACCESS_LOG_EMPTY)
                stage.setdefault("accessLogSettings", {})[parts[1]] = value
                return
            raise BadRequest(msg.ACCESS_LOG_PATH)
        if top == "canarySettings":
            self._patch_canary(api_id, stage, op, parts[1:])
            return
        if len(parts) >= 3 and kind in ("replace", "remove"):
            key = f"{parts[0]}/{parts[1]}"   # "*/*" or "~1pets/GET": AWS's methodSettings key
            setting = "/".join(parts[2:])
            if setting in self._METHOD_SETTINGS:
                member, reader = self._METHOD_SETTINGS[setting]
                settings = stage.setdefault("methodSettings", {})
                if kind == "remove":
                    settings.get(key, {}).pop(member, None)
                    return
                entry = settings.setdefault(key, dict(self._METHOD_SETTING_DEFAULTS))
                try:
                    entry[member] = _bool_value(value, path) if reader is bool else reader(value)
                except (TypeError, ValueError):
                    raise BadRequest(f"Invalid value '{value}' for {path}") from None
                return
        if len(parts) == 2 and kind == "remove" and parts[1] != "":
            key = f"{parts[0]}/{parts[1]}"
            if key not in stage.get("methodSettings", {}):
                raise BadRequest(msg.METHOD_SETTING_REMOVE_NOTHING.format(setting=key))
            del stage["methodSettings"][key]
            return
        if kind in ("add", "replace", "remove"):
            raise BadRequest(msg.STAGE_PATCH_PATH.format(path=path))
        raise _bad_patch(op)

    def _patch_canary(self, api_id: str, stage: dict, op: dict, rest: list[str]) -> None:
        kind, value = op["op"], op.get("value")
        if not rest:
            if kind == "remove":    # discard the canary
                stage.pop("canarySettings", None)
                return
            raise BadRequest(msg.STAGE_PATCH_PATH.format(path=op["path"]))
        # AWS's answers (its recordings): add only on a stage variable override; remove only
        # the canary or one override; replace only the canary's own members
        field_name = rest[0]
        if kind == "add" and field_name != "stageVariableOverrides":
            raise BadRequest(msg.PATCH_ADD_INVALID.format(path=op["path"]))
        if kind == "remove" and len(rest) == 1:
            raise BadRequest(msg.METHOD_SETTING_REMOVE_NOTHING.format(setting=op["path"][1:]))
        if kind == "replace" and len(rest) == 1 and field_name not in (
                "percentTraffic", "deploymentId", "useStageCache"):
            raise BadRequest(msg.STAGE_PATCH_PATH.format(path=op["path"]))
        if kind == "replace" and field_name == "deploymentId" and len(rest) == 1 and \
                value not in self.state.deployments.get(api_id, {}):
            raise BadRequest(msg.CANARY_DEPLOYMENT_MISSING)
        canary = stage.get("canarySettings")
        if canary is None:
            # the first canary patch creates the canary on the stage's own deployment
            canary = stage["canarySettings"] = {"deploymentId": stage["deploymentId"],
                                                "percentTraffic": 0.0, "useStageCache": False}
        if field_name == "percentTraffic" and kind == "replace" and len(rest) == 1:
            canary["percentTraffic"] = _check_percent(value)
        elif field_name == "deploymentId" and kind == "replace" and len(rest) == 1:
            canary["deploymentId"] = value
        elif field_name == "useStageCache" and kind == "replace" and len(rest) == 1:
            canary["useStageCache"] = _bool_value(value, op["path"])
        elif field_name == "stageVariableOverrides" and len(rest) >= 2 and kind in ("add", "replace", "remove"):
            name = _unescape_pointer("/".join(rest[1:]))
            overrides = canary.setdefault("stageVariableOverrides", {})
            if kind == "remove":
                overrides.pop(name, None)
            else:
                overrides.update(_check_variables({name: value if value is not None else ""},
                                                  "stageVariableOverrides"))
            if not overrides:
                del canary["stageVariableOverrides"]
        else:
            raise _bad_patch(op)
