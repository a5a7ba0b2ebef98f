"""Stages (autoDeploy, stage variables, route settings, access log settings) and
deployments (manual, and automatic on every change of an autoDeploy stage's API)."""

from __future__ import annotations

from fastgate.control.errors import BadRequest, Conflict, NotFound
from fastgate.control.model.base import _check_variables, _clone, _now
from fastgate.control.names import STAGE_NAME
from fastgate.control.v2.base import V2Base, page
from fastgate.control.v2.routes import check_route_key
from fastgate.control.v2.websocket import check_ws_route_key, is_websocket

STAGE_OUT = ("stageName", "accessLogSettings", "apiGatewayManaged", "autoDeploy",
             "clientCertificateId", "createdDate", "defaultRouteSettings", "deploymentId",
             "description", "lastDeploymentStatusMessage", "lastUpdatedDate", "routeSettings",
             "stageVariables", "tags")
DEPLOYMENT_OUT = ("deploymentId", "autoDeployed", "createdDate", "deploymentStatus",
                  "deploymentStatusMessage", "description")
ROUTE_SETTINGS = {"dataTraceEnabled": bool, "detailedMetricsEnabled": bool, "loggingLevel": str,
                  "throttlingBurstLimit": int, "throttlingRateLimit": float}
LOGGING_LEVELS = ("ERROR", "INFO", "OFF")


def check_route_settings(settings, where: str) -> dict:
    if not isinstance(settings, dict):
        raise BadRequest(f"Invalid {where}: must be an object")
    out = {}
    for k, v in settings.items():
        kind = ROUTE_SETTINGS.get(k)
        if kind is None:
            raise BadRequest(f"Invalid {where}: unknown setting {k}")
        if kind is float and isinstance(v, (int, float)) and not isinstance(v, bool):
            v = float(v)
        if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
            raise BadRequest(f"Invalid {where}.{k}: {v!r}")
        if k == "loggingLevel" and v not in LOGGING_LEVELS:
            raise BadRequest(f"Invalid {where}.loggingLevel {v}: must be one of ERROR, INFO, OFF")
        if k.startswith("throttling") and v < 0:
            raise BadRequest(f"Invalid {where}.{k}: must not be negative")
        out[k] = v
    return out


def check_access_log_settings(settings) -> dict:
    """destinationArn: a file path (absolute), `-` for standard output, or a CloudWatch Logs
    ARN, which sends the lines to the gateway's configured access log; format: $context
    variables (docs/observability.md)."""
    if not isinstance(settings, dict):
        raise BadRequest("Invalid accessLogSettings: must be an object")
    dest, fmt = settings.get("destinationArn"), settings.get("format")
    if not dest or not fmt:
        raise BadRequest("AccessLogSettings needs both DestinationArn and Format")
    if not (dest == "-" or dest.startswith("/") or dest.startswith("arn:")):
        raise BadRequest(f"Invalid destinationArn {dest}: use an absolute file path, '-' (standard "
                         "output) or a CloudWatch Logs log group ARN (the configured access log)")
    from fastgate._core.accesslog import AccessLog
    try:
        AccessLog("-", fmt).close()     # the format compiles as the data plane will compile it
    except ValueError as e:
        raise BadRequest(f"Invalid access log format: {e}") from None
    return {"destinationArn": dest, "format": fmt}


class Stages(V2Base):
    @staticmethod
    def stage_view(stage: dict) -> dict:
        out = {k: _clone(stage[k]) for k in STAGE_OUT if stage.get(k) is not None}
        out.setdefault("stageVariables", {})
        out.setdefault("routeSettings", {})
        out.setdefault("tags", {})
        return out

    @staticmethod
    def deployment_view(dep: dict) -> dict:
        return {k: _clone(dep[k]) for k in DEPLOYMENT_OUT if dep.get(k) is not None}

    def _apply_stage_input(self, api: dict, stage: dict, p: dict) -> None:
        if p.get("deploymentId") is not None:
            self._deployment2(api["id"], p["deploymentId"])
            stage["deploymentId"] = p["deploymentId"]
        for k in ("description", "clientCertificateId"):
            if p.get(k) is not None:
                stage[k] = p[k]
        if p.get("autoDeploy") is not None:
            stage["autoDeploy"] = bool(p["autoDeploy"])
        if p.get("stageVariables") is not None:
            stage["stageVariables"] = _check_variables(p["stageVariables"], "stageVariables")
        if p.get("defaultRouteSettings") is not None:
            stage["defaultRouteSettings"] = check_route_settings(p["defaultRouteSettings"],
                                                                 "defaultRouteSettings")
        if p.get("routeSettings") is not None:
            settings = {}
            for key, value in p["routeSettings"].items():
                check_ws_route_key(key) if is_websocket(api) else check_route_key(key)
                settings[key] = check_route_settings(value, f"routeSettings.{key}")
            stage["routeSettings"] = settings
        if p.get("accessLogSettings") is not None:
            stage["accessLogSettings"] = check_access_log_settings(p["accessLogSettings"])

    def create_stage(self, p: dict) -> dict:
        name = p["stageName"]
        if name != "$default" and not STAGE_NAME.match(name):
            raise BadRequest("Stage name only allows a-zA-Z0-9_- (or is $default)")
        with self.change() as txn:
            api = self._api2(p["apiId"])
            if name == "$default" and is_websocket(api):
                raise BadRequest("Stage name only allows a-zA-Z0-9_- ($default is for HTTP APIs)")
            if name in self.state.stages.get(api["id"], {}):
                raise Conflict(f"Stage {name} already exists")
            now = _now()
            stage = {"stageName": name, "createdDate": now, "lastUpdatedDate": now,
                     "autoDeploy": False, "defaultRouteSettings": {"detailedMetricsEnabled": False},
                     "routeSettings": {}, "stageVariables": {}}
            if p.get("tags") is not None:
                stage["tags"] = dict(p["tags"])
            self._apply_stage_input(api, stage, p)
            if stage["autoDeploy"] and not p.get("deploymentId"):
                # AWS deploys an autoDeploy stage at once
                self._deploy(txn, api, stage, description=None, auto=True)
            else:
                txn.put("stage", api["id"], name, stage)
        return self.stage_view(stage)

    def get_stage(self, p: dict) -> dict:
        self.fresh()
        self._api2(p["apiId"])
        return self.stage_view(self._stage2(p["apiId"], p["stageName"]))

    def get_stages(self, p: dict) -> dict:
        self.fresh()
        self._api2(p["apiId"])
        stages = sorted(self.state.stages.get(p["apiId"], {}).values(), key=lambda s: s["stageName"])
        return page([self.stage_view(s) for s in stages], p)

    def update_stage(self, p: dict) -> dict:
        with self.change() as txn:
            api = self._api2(p["apiId"])
            stage = _clone(self._stage2(api["id"], p["stageName"]))
            was_auto = stage.get("autoDeploy")
            self._apply_stage_input(api, stage, p)
            stage["lastUpdatedDate"] = _now()
            if stage.get("autoDeploy") and not was_auto and not p.get("deploymentId"):
                self._deploy(txn, api, stage, description=None, auto=True)
            else:
                txn.put("stage", api["id"], stage["stageName"], stage)
        return self.stage_view(stage)

    def delete_stage(self, p: dict) -> dict:
        with self.change() as txn:
            self._api2(p["apiId"])
            self._stage2(p["apiId"], p["stageName"])
            for domain, mappings in self.state.mappings.items():
                for base, m in mappings.items():
                    if m.get("restApiId") == p["apiId"] and m.get("stage") == p["stageName"]:
                        raise BadRequest(f"Cannot delete this stage: API mapping '{base}' of "
                                         f"domain name '{domain}' refers to it")
            txn.delete("stage", p["apiId"], p["stageName"])
        return {}

    def _edit_stage(self, p: dict) -> dict:
        self._api2(p["apiId"])
        return _clone(self._stage2(p["apiId"], p["stageName"]))

    def delete_access_log_settings(self, p: dict) -> dict:
        with self.change() as txn:
            stage = self._edit_stage(p)
            stage.pop("accessLogSettings", None)
            stage["lastUpdatedDate"] = _now()
            txn.put("stage", p["apiId"], stage["stageName"], stage)
        return {}

    def delete_route_settings(self, p: dict) -> dict:
        with self.change() as txn:
            stage = self._edit_stage(p)
            settings = stage.get("routeSettings") or {}
            if p["routeKey"] not in settings:
                raise NotFound(f"Invalid route settings identifier specified {p['routeKey']}")
            del settings[p["routeKey"]]
            stage["lastUpdatedDate"] = _now()
            txn.put("stage", p["apiId"], stage["stageName"], stage)
        return {}

    # ---- deployments

    def create_deployment(self, p: dict) -> dict:
        with self.change() as txn:
            api = self._api2(p["apiId"])
            stage = None
            if p.get("stageName"):
                stage = _clone(self._stage2(api["id"], p["stageName"]))
                if stage.get("autoDeploy"):
                    raise BadRequest(f"Stage {p['stageName']} has autoDeploy enabled: its "
                                     "deployments are made automatically")
            dep = self._deploy(txn, api, stage, description=p.get("description"))
        return self.deployment_view(dep)

    def get_deployment(self, p: dict) -> dict:
        self.fresh()
        self._api2(p["apiId"])
        return self.deployment_view(self._deployment2(p["apiId"], p["deploymentId"]))

    def get_deployments(self, p: dict) -> dict:
        self.fresh()
        self._api2(p["apiId"])
        deps = sorted(self.state.deployments.get(p["apiId"], {}).values(),
                      key=lambda d: (d.get("createdDate", 0), d["id"]))
        return page([self.deployment_view(d) for d in deps], p)

    def update_deployment(self, p: dict) -> dict:
        with self.change() as txn:
            self._api2(p["apiId"])
            dep = _clone(self._deployment2(p["apiId"], p["deploymentId"]))
            if p.get("description") is not None:
                dep["description"] = p["description"]
            txn.put("deployment", p["apiId"], dep["id"], dep)
        return self.deployment_view(dep)

    def delete_deployment(self, p: dict) -> dict:
        with self.change() as txn:
            self._api2(p["apiId"])
            self._deployment2(p["apiId"], p["deploymentId"])
            users = sorted(n for n, s in self.state.stages.get(p["apiId"], {}).items()
                           if s.get("deploymentId") == p["deploymentId"])
            if users:
                raise BadRequest("Active stages pointing to this deployment must be moved or "
                                 f"deleted: {', '.join(users)}")
            txn.delete("deployment", p["apiId"], p["deploymentId"])
        return {}
