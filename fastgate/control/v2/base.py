"""What every apigatewayv2 resource family stands on: the shared State, the API document
of an HTTP API, apigatewayv2's paging (maxResults/nextToken), ids, and automatic
deployment.

An apigatewayv2 API is one document in the same State and store as the REST APIs
(`State.apis`, store kind "api"): AWS's Api members plus its routes, integrations,
authorizers and models, each a dict keyed by id in AWS's own shape (camelCase, as the
service sends it). Its stages and deployments are the State's stages and deployments of
that API id, like a REST API's; a deployment freezes the data plane's document of the
API (fastgate.control.v2.document), so the data plane serves both kinds the same way.
"""

from __future__ import annotations

import base64
import re
from typing import TYPE_CHECKING

from fastgate.control.errors import BadRequest, NotFound
from fastgate.control.model.base import ModelBase, _clone, _now
from fastgate.control.names import V2_SERVICE, is_v2_api, new_id

if TYPE_CHECKING:
    from fastgate.control.model import Model
    from fastgate.control.store import Txn

KIND_API = "api"            # the store kind of an apigatewayv2 API document
SERVICE_MARK = V2_SERVICE
PROTOCOLS = ("HTTP", "WEBSOCKET")
MAX_RESULTS_DEFAULT = 100    # items per page when maxResults is not given
AUTO_DEPLOY_DESCRIPTION = "Automatic deployment triggered by changes to the Api configuration"


# a Lambda function ARN or its invocation URI (integrations, authorizers)
LAMBDA_ARN = re.compile(r"^arn:aws[a-z-]*:(lambda:[a-z0-9-]+:\d{12}:function:[A-Za-z0-9_-]+(:[A-Za-z0-9_$-]+)?"
                        r"|apigateway:[a-z0-9-]+:lambda:path/2015-03-31/functions/arn:aws[a-z-]*:lambda:"
                        r"[a-z0-9-]+:\d{12}:function:[A-Za-z0-9_-]+(:[A-Za-z0-9_$-]+)?/invocations)$")


def is_lambda_arn(uri: str) -> bool:
    """A Lambda function ARN or invocation URI; the function part may be a stage variable
    (function:${stageVariables.fn}), which the stage fills when it is served."""
    return bool(LAMBDA_ARN.match(re.sub(r"\$\{stageVariables\.[A-Za-z0-9_]+\}", "v", uri or "")))


is_v2 = is_v2_api      # whether a State.apis document is apigatewayv2's (else a REST API's)


def page(items: list, p: dict) -> dict:
    """apigatewayv2's paging: `maxResults` (a string in the model) items from the opaque
    `nextToken` on; `nextToken` in the answer when more follow."""
    raw = p.get("maxResults")
    limit = MAX_RESULTS_DEFAULT
    if raw not in (None, ""):
        try:
            limit = int(raw)
        except (TypeError, ValueError):
            raise BadRequest(f"Invalid MaxResults value: {raw}") from None
        if limit < 1:
            raise BadRequest(f"Invalid MaxResults value: {raw}")
    start = 0
    token = p.get("nextToken")
    if token:
        try:
            start = int(base64.urlsafe_b64decode(token.encode() + b"==").decode())
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("Invalid NextToken value") from None
    out = {"items": items[start:start + limit]}
    if start + limit < len(items):
        out["nextToken"] = base64.urlsafe_b64encode(str(start + limit).encode()).decode().rstrip("=")
    return out


def fresh_id(taken, length: int) -> str:
    while True:
        i = new_id(length)
        if i not in taken:
            return i


def not_deployable(api: dict) -> str | None:
    """Why a WebSocket API cannot be deployed yet, or None."""
    if not api.get("routes"):
        return "At least one route is required before deploying the Api."
    for route in sorted(api["routes"].values(), key=lambda r: r["routeKey"]):
        if not (route.get("target") or "").startswith("integrations/"):
            return (f"Route {route['routeKey']} has no integration: set its target before "
                    "deploying the Api.")
    return None


class V2Base(ModelBase):
    """apigatewayv2's operations over the REST model's store and State: one State in memory,
    one transaction lock, whichever service changes it."""

    def __init__(self, rest: "Model"):
        # not ModelBase.__init__: the State, store and commit hook are the REST model's
        self.rest = rest
        self.store = rest.store
        # the data plane's address as clients reach it, for Api.apiEndpoint (set by the
        # admin process from the config's first listener)
        self.endpoint_base = "http://{api_id}.execute-api.localhost"
        # () -> the names of the config's upstream groups (a VPC link names one)
        self.upstream_names = lambda: set()

    @property
    def state(self):
        return self.rest.state

    @state.setter
    def state(self, value):
        self.rest.state = value

    @property
    def on_commit(self):
        return self.rest.on_commit

    # ---- lookups

    def _api2(self, api_id: str) -> dict:
        api = self.state.apis.get(api_id)
        if api is None or not is_v2(api):
            raise NotFound(f"Invalid API identifier specified {api_id}")
        return api

    def _edit_api2(self, api_id: str) -> dict:
        return _clone(self._api2(api_id))

    @staticmethod
    def _child(api: dict, kind: str, item_id: str, what: str) -> dict:
        item = (api.get(kind) or {}).get(item_id)
        if item is None:
            raise NotFound(f"Invalid {what} identifier specified {item_id}")
        return item

    def _stage2(self, api_id: str, name: str) -> dict:
        stage = self.state.stages.get(api_id, {}).get(name)
        if stage is None:
            raise NotFound(f"Invalid stage identifier specified {name}")
        return stage

    def _deployment2(self, api_id: str, dep_id: str) -> dict:
        dep = self.state.deployments.get(api_id, {}).get(dep_id)
        if dep is None:
            raise NotFound(f"Invalid Deployment identifier specified {dep_id}")
        return dep

    # ---- saving

    def _save_api2(self, txn: "Txn", api: dict, *, redeploy: bool = True) -> None:
        """Write the API document; with redeploy, every stage with autoDeploy gets a new
        deployment of it in the same transaction, as AWS deploys such stages on each change."""
        txn.put(KIND_API, "", api["id"], api)
        if redeploy:
            for name, stage in sorted(self.state.stages.get(api["id"], {}).items()):
                if stage.get("autoDeploy"):
                    self._deploy(txn, api, dict(stage), description=AUTO_DEPLOY_DESCRIPTION,
                                 auto=True)

    def _deploy(self, txn: "Txn", api: dict, stage: dict | None, *, description: str | None,
                auto: bool = False) -> dict | None:
        """A new deployment of the API as it is now; the stage (if any) moves to it. (None:
        an automatic deployment of a WebSocket API waits until every route has a target.)"""
        if api.get("protocolType") == "WEBSOCKET":
            # served as it is (fastgate/compile/websocket.py reads the v2 shapes)
            why = not_deployable(api)
            if why is not None:
                if not auto:
                    raise BadRequest(why)
                if stage is not None:      # an automatic deployment waits for a whole API
                    txn.put("stage", api["id"], stage["stageName"], stage)
                return None
            doc = _clone(api)
        else:
            from fastgate.control.v2.document import data_plane_document
            links = (self.state.extra.get("vpclink") or {}).get("", {})
            doc = data_plane_document(api, links)
        dep = {"deploymentId": fresh_id(self.state.deployments.get(api["id"], {}), 6),
               "createdDate": _now(), "deploymentStatus": "DEPLOYED", "autoDeployed": auto,
               "api": doc}
        dep["id"] = dep["deploymentId"]   # the key the data plane and the State use
        if description is not None:
            dep["description"] = description
        txn.put("deployment", api["id"], dep["id"], dep)
        if stage is not None:
            stage["deploymentId"] = dep["id"]
            stage["lastUpdatedDate"] = _now()
            if auto:
                stage["lastDeploymentStatusMessage"] = (
                    f"Successfully deployed stage with deployment ID '{dep['id']}'")
            txn.put("stage", api["id"], stage["stageName"], stage)
        return dep

    # ---- an API's child resources (routes, integrations, authorizers, models): the same
    # create/get/list/update steps, each family with its own fields, check and view

    def _create_child(self, p: dict, kind: str, id_key: str, id_length: int, fields, check, view):
        """Create one child from the request's `fields`; check(api, child) completes and
        validates it before the API (and its autoDeploy stages) is saved."""
        with self.change() as txn:
            api = self._edit_api2(p["apiId"])
            child = {k: _clone(p[k]) for k in fields if p.get(k) is not None}
            child[id_key] = fresh_id(api[kind], id_length)
            check(api, child)
            api[kind][child[id_key]] = child
            self._save_api2(txn, api)
        return view(child)

    def _get_child(self, p: dict, kind: str, id_key: str, what: str, view) -> dict:
        self.fresh()
        return view(self._child(self._api2(p["apiId"]), kind, p[id_key], what))

    def _list_children(self, p: dict, kind: str, order, view) -> dict:
        self.fresh()
        items = sorted(self._api2(p["apiId"])[kind].values(), key=order)
        return page([view(i) for i in items], p)

    def _update_child(self, p: dict, kind: str, id_key: str, what: str, fields, check, view,
                      before=None):
        """Apply the request's `fields` to one child; before(api, child, p) runs first (a
        refusal, a field the update clears), check(api, child) on the result."""
        with self.change() as txn:
            api = self._edit_api2(p["apiId"])
            child = self._child(api, kind, p[id_key], what)
            if before is not None:
                before(api, child, p)
            for k in fields:
                if p.get(k) is not None:
                    child[k] = _clone(p[k])
            check(api, child)
            self._save_api2(txn, api)
        return view(child)
