"""The apigatewayv2 service (version 2018-11-29) on the admin listener: botocore's model is
the specification, as for apigateway (fastgate/control/api.py, which dispatches every path
under /v2/ here). Same SigV4 admin credentials (both services sign as `apigateway`), AWS's
error shapes, apigatewayv2's paging (maxResults, nextToken)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastgate.control.service import Service, ServiceSpec, load_model
from fastgate.control.v2 import OPERATIONS, ModelV2

if TYPE_CHECKING:
    from fastgate.control.model import Model

SERVICE = "apigatewayv2"
API_VERSION = "2018-11-29"
# operations whose body holds an OpenAPI document (a JSON string member, not a blob payload)
DOCUMENT_OPERATIONS = ("ImportApi", "ReimportApi")


def load_service_model() -> dict:
    return load_model(SERVICE, API_VERSION)


def v2_service(rest_model: "Model", service_model: dict | None = None) -> Service:
    """The apigatewayv2 Service over the REST model's store and State; its ModelV2 is
    `service.model`."""
    model = ModelV2(rest_model)
    spec = ServiceSpec(service_model or load_service_model(), wire_names=True,
                       document_operations=DOCUMENT_OPERATIONS)
    service = Service(SERVICE, spec, {name: getattr(model, method) for name, method in OPERATIONS.items()},
                      version=API_VERSION)
    service.model = model
    return service
