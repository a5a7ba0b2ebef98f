"""The control plane's state and its operations, in Amazon API Gateway's own terms.

`State` is what the data plane compiles: rest API documents (AWS's RestApi shape
plus its resources, methods and integrations, see docs/control-api.md), frozen
deployments, stages, domain names and base path mappings. `Model` holds a State
and applies the management API's operations to it, each one a single store
transaction. Every operation takes the input members of AWS's request shape
(camelCase, as botocore names them) in a dict and returns AWS's output shape;
invalid input raises an ApiError that the control API turns into AWS's error.

A mutation never edits the in-memory State in place: it writes new documents
through the transaction, and they replace the old ones only after the commit.
"""

from __future__ import annotations

import re
from typing import Any

from fastgate.control.model.access_associations import AccessAssociations
from fastgate.control.model.account import Account
from fastgate.control.model.authorizer_caches import AuthorizerCaches
from fastgate.control.model.authorizers import Authorizers
from fastgate.control.model.client_certificates import ClientCertificates
from fastgate.control.model.documentation import Documentation
from fastgate.control.model.domains import Domains
from fastgate.control.model.gateway_responses import GatewayResponses
from fastgate.control.model.keys import ApiKeys
from fastgate.control.model.models import Models
from fastgate.control.model.resources import Resources
from fastgate.control.model.restapis import RestApis
from fastgate.control.model.sdks import Sdks
from fastgate.control.model.stages import Stages
from fastgate.control.model.tags import Tags
from fastgate.control.model.updates import Updates
from fastgate.control.model.usage_plans import UsagePlans
from fastgate.control.model.validators import RequestValidators
from fastgate.control.model.vpc_links import VpcLinks


class Model(RestApis, Resources, Authorizers, Stages, Domains, GatewayResponses, ApiKeys, UsagePlans,
            Models, RequestValidators, Updates, Account, Tags, ClientCertificates, VpcLinks,
            Documentation, AccessAssociations, Sdks, AuthorizerCaches):
    """The management API's operations over a Store, one resource family per module."""


# operation name (botocore's) -> Model method; what the control API serves
OPERATIONS: dict[str, str] = {
    name: re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
    for name in (
        "CreateRestApi", "GetRestApi", "GetRestApis", "DeleteRestApi", "UpdateRestApi",
        "ImportRestApi", "PutRestApi", "GetExport",
        "GetResources", "GetResource", "CreateResource", "DeleteResource",
        "PutMethod", "GetMethod", "UpdateMethod", "DeleteMethod",
        "CreateAuthorizer", "GetAuthorizer", "GetAuthorizers", "UpdateAuthorizer", "DeleteAuthorizer",
        "TestInvokeAuthorizer",
        "PutIntegration", "GetIntegration", "DeleteIntegration",
        "PutIntegrationResponse", "GetIntegrationResponse", "DeleteIntegrationResponse",
        "PutMethodResponse", "GetMethodResponse", "DeleteMethodResponse",
        "CreateDeployment", "GetDeployment", "GetDeployments", "UpdateDeployment", "DeleteDeployment",
        "CreateStage", "GetStage", "GetStages", "UpdateStage", "DeleteStage",
        "CreateDomainName", "GetDomainName", "GetDomainNames", "DeleteDomainName",
        "CreateBasePathMapping", "GetBasePathMapping", "GetBasePathMappings",
        "UpdateBasePathMapping", "DeleteBasePathMapping",
        "PutGatewayResponse", "GetGatewayResponse", "GetGatewayResponses", "DeleteGatewayResponse",
        "CreateApiKey", "GetApiKey", "GetApiKeys", "UpdateApiKey", "DeleteApiKey", "ImportApiKeys",
        "CreateUsagePlan", "GetUsagePlan", "GetUsagePlans", "UpdateUsagePlan", "DeleteUsagePlan",
        "CreateUsagePlanKey", "GetUsagePlanKey", "GetUsagePlanKeys", "DeleteUsagePlanKey",
        "GetUsage", "UpdateUsage",
        "CreateModel", "GetModel", "GetModels", "UpdateModel", "DeleteModel", "GetModelTemplate",
        "CreateRequestValidator", "GetRequestValidator", "GetRequestValidators",
        "UpdateRequestValidator", "DeleteRequestValidator",
        "UpdateResource", "UpdateIntegration", "UpdateIntegrationResponse", "UpdateMethodResponse",
        "UpdateGatewayResponse", "UpdateDomainName",
        "GetAccount", "UpdateAccount", "TagResource", "UntagResource", "GetTags",
        "GenerateClientCertificate", "GetClientCertificate", "GetClientCertificates",
        "UpdateClientCertificate", "DeleteClientCertificate",
        "CreateVpcLink", "GetVpcLink", "GetVpcLinks", "UpdateVpcLink", "DeleteVpcLink",
        "CreateDocumentationPart", "GetDocumentationPart", "GetDocumentationParts",
        "UpdateDocumentationPart", "DeleteDocumentationPart", "ImportDocumentationParts",
        "CreateDocumentationVersion", "GetDocumentationVersion", "GetDocumentationVersions",
        "UpdateDocumentationVersion", "DeleteDocumentationVersion",
        "CreateDomainNameAccessAssociation", "GetDomainNameAccessAssociations",
        "DeleteDomainNameAccessAssociation", "RejectDomainNameAccessAssociation",
        "GetSdkTypes", "GetSdkType", "GetSdk", "FlushStageAuthorizersCache", "TestInvokeMethod",
    )
}


def call(model: Model, operation: str, params: dict[str, Any]) -> dict:
    """Run one operation by its AWS name; KeyError if fastgate does not serve it."""
    return getattr(model, OPERATIONS[operation])(params)
