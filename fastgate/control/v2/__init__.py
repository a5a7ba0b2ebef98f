"""Amazon API Gateway's v2 management API (service `apigatewayv2`, version 2018-11-29):
HTTP APIs and WebSocket APIs, over the same store and State as the REST APIs (fastgate.control.model).

One module per resource family, like fastgate/control/model/:

    base.py          the shared State, the API document, paging, ids, automatic deployment
    document.py      an apigatewayv2 API <-> the data plane's (and OpenAPI's) API document
    apis.py          Apis: create (quick create), get, update, delete, CORS, import/export
    routes.py        Routes, route request parameters
    integrations.py  Integrations
    websocket.py     what only WebSocket APIs take: route selection, route keys, route
                     responses, integration responses, their integrations' and authorizers' rules
    authorizers.py   Authorizers (JWT, REQUEST), ResetAuthorizersCache
    stages.py        Stages, route settings, access log settings, Deployments
    domains.py       Domain names, API mappings (= base path mappings), routing rules
    models.py        Models, GetModelTemplate
    vpclinks.py      VPC links (naming upstream groups)
    tags.py          Tags by ARN
    api.py           the service: botocore's model, the operations' handlers

The operations that only WebSocket APIs have (route and integration responses) answer
AWS's BadRequest for HTTP APIs. A deployment of a WebSocket API freezes the API as it is
(routes, integrations and their responses, authorizers); fastgate/compile/websocket.py
serves it with the same WebSocket data plane as the config's `websocket_apis:`.
"""

from __future__ import annotations

import re

from fastgate.control.v2.apis import Apis
from fastgate.control.v2.authorizers import Authorizers
from fastgate.control.v2.domains import Domains
from fastgate.control.v2.integrations import Integrations
from fastgate.control.v2.models import Models
from fastgate.control.v2.routes import Routes
from fastgate.control.v2.stages import Stages
from fastgate.control.v2.tags import Tags
from fastgate.control.v2.vpclinks import VpcLinks
from fastgate.control.v2.websocket import WebSocketResponses


class ModelV2(Apis, Routes, Integrations, WebSocketResponses, Authorizers, Stages, Domains, Models,
              VpcLinks, Tags):
    """apigatewayv2's operations, one resource family per module."""


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


# operation name (botocore's) -> ModelV2 method: every apigatewayv2 operation of HTTP and
# WebSocket APIs; the Portal operations are not served
OPERATIONS: dict[str, str] = {name: _snake(name) for name in (
    "CreateApi", "GetApi", "GetApis", "UpdateApi", "DeleteApi", "DeleteCorsConfiguration",
    "ImportApi", "ReimportApi", "ExportApi",
    "CreateRoute", "GetRoute", "GetRoutes", "UpdateRoute", "DeleteRoute",
    "DeleteRouteRequestParameter",
    "CreateRouteResponse", "GetRouteResponse", "GetRouteResponses", "UpdateRouteResponse",
    "DeleteRouteResponse",
    "CreateIntegration", "GetIntegration", "GetIntegrations", "UpdateIntegration",
    "DeleteIntegration",
    "CreateIntegrationResponse", "GetIntegrationResponse", "GetIntegrationResponses",
    "UpdateIntegrationResponse", "DeleteIntegrationResponse",
    "CreateAuthorizer", "GetAuthorizer", "GetAuthorizers", "UpdateAuthorizer", "DeleteAuthorizer",
    "ResetAuthorizersCache",
    "CreateStage", "GetStage", "GetStages", "UpdateStage", "DeleteStage",
    "DeleteAccessLogSettings", "DeleteRouteSettings",
    "CreateDeployment", "GetDeployment", "GetDeployments", "UpdateDeployment", "DeleteDeployment",
    "CreateDomainName", "GetDomainName", "GetDomainNames", "UpdateDomainName", "DeleteDomainName",
    "CreateApiMapping", "GetApiMapping", "GetApiMappings", "UpdateApiMapping", "DeleteApiMapping",
    "CreateRoutingRule", "GetRoutingRule", "ListRoutingRules", "PutRoutingRule",
    "DeleteRoutingRule",
    "CreateModel", "GetModel", "GetModels", "UpdateModel", "DeleteModel", "GetModelTemplate",
    "CreateVpcLink", "GetVpcLink", "GetVpcLinks", "UpdateVpcLink", "DeleteVpcLink",
    "GetTags", "TagResource", "UntagResource",
)}
