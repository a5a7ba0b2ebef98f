"""Gateway responses of an API: AWS's types and defaults, put, get, delete."""

from __future__ import annotations

from fastgate.control.errors import BadRequest, NotFound
from fastgate.control.model.base import STATUS_CODE, ModelBase, _clone, _page

# AWS's gateway response types: type -> (default status code, default message). None for
# DEFAULT_4XX/DEFAULT_5XX, which have no status of their own. Source: "Gateway response
# types for API Gateway" in the API Gateway developer guide. The data plane uses this too.
GATEWAY_RESPONSE_DEFAULTS: dict[str, tuple[str | None, str | None]] = {
    "ACCESS_DENIED": ("403", "User is not authorized to access this resource"),
    "API_CONFIGURATION_ERROR": ("500", "Internal server error"),
    "AUTHORIZER_CONFIGURATION_ERROR": ("500", "Internal server error"),
    "AUTHORIZER_FAILURE": ("500", "Internal server error"),
    "BAD_REQUEST_PARAMETERS": ("400", "Missing required request parameters"),
    "BAD_REQUEST_BODY": ("400", "Invalid request body"),
    "DEFAULT_4XX": (None, None),
    "DEFAULT_5XX": (None, None),
    "EXPIRED_TOKEN": ("403", "The security token included in the request is expired"),
    "INTEGRATION_FAILURE": ("504", "Internal server error"),
    "INTEGRATION_TIMEOUT": ("504", "Endpoint request timed out"),
    "INVALID_API_KEY": ("403", "Forbidden"),
    "INVALID_SIGNATURE": ("403", "The request signature we calculated does not match the "
                                 "signature you provided. Check your AWS Secret Access Key and "
                                 "signing method. Consult the service documentation for details."),
    "MISSING_AUTHENTICATION_TOKEN": ("403", "Missing Authentication Token"),
    "QUOTA_EXCEEDED": ("429", "Limit Exceeded"),
    "REQUEST_TOO_LARGE": ("413", "Request Too Long"),
    "RESOURCE_NOT_FOUND": ("404", "Not Found"),
    "THROTTLED": ("429", "Too Many Requests"),
    "UNAUTHORIZED": ("401", "Unauthorized"),
    "UNSUPPORTED_MEDIA_TYPE": ("415", "Unsupported Media Type"),
    "WAF_FILTERED": ("403", "Forbidden"),
}
DEFAULT_RESPONSE_TEMPLATE = {"application/json": '{"message":$context.error.messageString}'}


def default_gateway_response(response_type: str) -> dict:
    status, _ = GATEWAY_RESPONSE_DEFAULTS[response_type]
    doc = {"responseType": response_type, "responseParameters": {},
           "responseTemplates": dict(DEFAULT_RESPONSE_TEMPLATE), "defaultResponse": True}
    if status is not None:
        doc["statusCode"] = status
    return doc


class GatewayResponses(ModelBase):
    # ---- gateway responses

    @staticmethod
    def _response_type(p: dict) -> str:
        rtype = p["responseType"]
        if rtype not in GATEWAY_RESPONSE_DEFAULTS:
            raise BadRequest(f"Invalid gateway response type '{rtype}'. Valid types are "
                             f"{', '.join(GATEWAY_RESPONSE_DEFAULTS)}")
        return rtype

    def put_gateway_response(self, p: dict) -> dict:
        rtype = self._response_type(p)
        status = p.get("statusCode")
        if status is not None and not STATUS_CODE.match(status):
            raise BadRequest("Invalid status code specified. Must be a 3-digit code from 100 to 599")
        with self.change() as txn:
            api = self._edit_api(p["restApiId"])
            resp = {"responseType": rtype, "defaultResponse": False,
                    "responseParameters": _clone(p.get("responseParameters") or {}),
                    "responseTemplates": _clone(p.get("responseTemplates") or {})}
            if status is not None:
                resp["statusCode"] = status
            api.setdefault("gatewayResponses", {})[rtype] = resp
            self._save_api(txn, api)
        return _clone(resp)

    def get_gateway_response(self, p: dict) -> dict:
        self.fresh()
        api = self._api(p["restApiId"])
        rtype = self._response_type(p)
        resp = (api.get("gatewayResponses") or {}).get(rtype)
        return _clone(resp) if resp is not None else default_gateway_response(rtype)

    def get_gateway_responses(self, p: dict) -> dict:
        self.fresh()
        api = self._api(p["restApiId"])
        custom = api.get("gatewayResponses") or {}
        items = [_clone(custom[t]) if t in custom else default_gateway_response(t)
                 for t in GATEWAY_RESPONSE_DEFAULTS]
        return _page(items, p)

    def delete_gateway_response(self, p: dict) -> dict:
        rtype = self._response_type(p)
        with self.change() as txn:
            api = self._edit_api(p["restApiId"])
            if (api.get("gatewayResponses") or {}).pop(rtype, None) is None:
                raise NotFound("Invalid gateway response type specified")
            self._save_api(txn, api)
        return {}
