"""Gateway responses of an API: AWS's types and defaults, put, get, delete."""

from __future__ import annotations

from fastgate.control import messages as msg
from fastgate.control.errors import BadRequest, NotFound
from fastgate.control.model.base import ModelBase, _clone, _page
from fastgate.control.names import GATEWAY_RESPONSE_STATUS, STATUS_CODE

DEFAULT_RESPONSE_TEMPLATE = {"application/json": '{"message":$context.error.messageString}'}


def default_gateway_response(response_type: str, custom: dict | None = None) -> dict:
    """A type the API did not customise, as AWS shows it: its own defaults, or, when the API
    customised DEFAULT_4XX / DEFAULT_5XX, that one's status, parameters and templates
    (still `defaultResponse: true`; AWS's recordings)."""
    status = GATEWAY_RESPONSE_STATUS[response_type]
    doc = {"responseType": response_type, "responseParameters": {},
           "responseTemplates": dict(DEFAULT_RESPONSE_TEMPLATE), "defaultResponse": True}
    if status is not None:
        doc["statusCode"] = status
        family = (custom or {}).get("DEFAULT_4XX" if int(status) < 500 else "DEFAULT_5XX")
        if family is not None:
            for key in ("statusCode", "responseParameters", "responseTemplates"):
                if key in family:
                    doc[key] = _clone(family[key])
    return doc


class GatewayResponses(ModelBase):
    # ---- gateway responses

    @staticmethod
    def _response_type(p: dict) -> str:
        rtype = p["responseType"]
        if rtype not in GATEWAY_RESPONSE_STATUS:
            raise BadRequest(f"Invalid gateway response type '{rtype}'. Valid types are "
                             f"{', '.join(GATEWAY_RESPONSE_STATUS)}")
        return rtype

    def put_gateway_response(self, p: dict) -> dict:
        rtype = self._response_type(p)
        status = p.get("statusCode")
        if status is not None and not STATUS_CODE.match(status):
            raise BadRequest(msg.INVALID_STATUS_CODE)
        with self.change() as txn:
            api = self._edit_api(p["restApiId"])
            # what the put leaves out is the type's default (AWS's recordings)
            default = GATEWAY_RESPONSE_STATUS[rtype]
            resp = {"responseType": rtype, "defaultResponse": False,
                    "responseParameters": _clone(p.get("responseParameters") or {}),
                    "responseTemplates": _clone(p.get("responseTemplates") or DEFAULT_RESPONSE_TEMPLATE)}
            if status is not None or default is not None:
                resp["statusCode"] = status if status is not None else default
            api.setdefault("gatewayResponses", {})[rtype] = resp
            self._save_api(txn, api)
        return _clone(resp)

    def get_gateway_response(self, p: dict) -> dict:
        self.fresh()
        api = self._api(p["restApiId"])
        rtype = self._response_type(p)
        custom = api.get("gatewayResponses") or {}
        resp = custom.get(rtype)
        return _clone(resp) if resp is not None else default_gateway_response(rtype, custom)

    def get_gateway_responses(self, p: dict) -> dict:
        self.fresh()
        api = self._api(p["restApiId"])
        custom = api.get("gatewayResponses") or {}
        items = [_clone(custom[t]) if t in custom else default_gateway_response(t, custom)
                 for t in GATEWAY_RESPONSE_STATUS]
        return _page(items, p)

    def delete_gateway_response(self, p: dict) -> dict:
        rtype = self._response_type(p)
        with self.change() as txn:
            api = self._edit_api(p["restApiId"])
            if (api.get("gatewayResponses") or {}).pop(rtype, None) is None:
                raise NotFound(msg.GATEWAY_RESPONSE_NOT_DEFINED)
            self._save_api(txn, api)
        return {}
