"""Request validators of a REST API: which checks (parameters, body) a method that names one
gets. They live in the API document's "requestValidators", where ImportRestApi puts
x-amazon-apigateway-request-validators too, so the data plane's validation
(fastgate/phases/validation.py) treats both alike."""

from __future__ import annotations

from fastgate.control.errors import BadRequest, NotFound
from fastgate.control.model.base import ModelBase, _bool_value, _clone, _page
from fastgate.control.messages import aws_message
from fastgate.control.model.patching import patch_operations, refuse
from fastgate.control.names import new_id

VALIDATOR_PATCH = {"replace": ("/name", "/validateRequestParameters", "/validateRequestBody")}


class RequestValidators(ModelBase):
    # ---- request validators

    def _validator(self, api_id: str, validator_id: str) -> tuple[dict, dict]:
        api = self.state.apis.get(api_id)
        for v in (api or {}).get("requestValidators") or ():
            if v["id"] == validator_id:
                return api, v
        # AWS answers the same for an unknown API and an unknown validator
        raise NotFound(aws_message("validator_not_found"))

    def create_request_validator(self, p: dict) -> dict:
        with self.change() as txn:
            if p["restApiId"] not in self.state.apis:
                raise BadRequest(aws_message("rest_api_identifier"))
            api = self._edit_api(p["restApiId"])
            validators = api.setdefault("requestValidators", [])
            name = p.get("name") or ""
            if not name:
                raise BadRequest(aws_message("validator_name_blank"))
            validator = {"id": new_id(6), "name": name,
                         "validateRequestBody": bool(p.get("validateRequestBody", False)),
                         "validateRequestParameters": bool(p.get("validateRequestParameters", False))}
            while any(v["id"] == validator["id"] for v in validators):
                validator["id"] = new_id(6)
            validators.append(validator)
            self._save_api(txn, api)
        return _clone(validator)

    def get_request_validator(self, p: dict) -> dict:
        self.fresh()
        return _clone(self._validator(p["restApiId"], p["requestValidatorId"])[1])

    def get_request_validators(self, p: dict) -> dict:
        self.fresh()
        api = self._api(p["restApiId"])
        return _page([_clone(v) for v in api.get("requestValidators") or ()], p)

    def update_request_validator(self, p: dict) -> dict:
        with self.change() as txn:
            api = _clone(self._validator(p["restApiId"], p["requestValidatorId"])[0])
            validator = next(v for v in api["requestValidators"] if v["id"] == p["requestValidatorId"])
            for op in patch_operations(p, "UpdateRequestValidator"):
                if op["op"] != "replace" or op.get("path") not in VALIDATOR_PATCH["replace"]:
                    raise refuse(op, VALIDATOR_PATCH)
                key, value = op["path"][1:], op.get("value")
                if key == "name":
                    if not value:
                        raise BadRequest(aws_message("validator_name_blank"))
                    validator["name"] = value
                else:
                    # AWS reads a replace without a value as false
                    validator[key] = _bool_value(value if value is not None else False, op["path"])
            self._save_api(txn, api)
        return _clone(validator)

    def delete_request_validator(self, p: dict) -> dict:
        with self.change() as txn:
            api = _clone(self._validator(p["restApiId"], p["requestValidatorId"])[0])
            vid = p["requestValidatorId"]
            for resource in api.get("resources", ()):
                for verb, method in (resource.get("resourceMethods") or {}).items():
                    if method.get("requestValidatorId") == vid:
                        # the method is left without validation rather than naming a
                        # validator that no longer exists (which would not compile)
                        del method["requestValidatorId"]
            api["requestValidators"] = [v for v in api["requestValidators"] if v["id"] != vid]
            self._save_api(txn, api)
        return {}
