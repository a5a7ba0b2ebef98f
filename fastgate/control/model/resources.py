"""Resources, methods, integrations, method and integration responses."""

from __future__ import annotations

import re

from fastgate.control import messages as msg
from fastgate.control.errors import BadRequest, Conflict, NotFound
from fastgate.control.model.authorizers import _check_method_authorizer
from fastgate.control.model.base import (
    ModelBase,
    _bad_patch,
    _bool_value,
    _clone,
    _copy_known,
    _page,
    _patch_ops,
    _require_str,
    _unescape_pointer,
)
from fastgate.control.model.patching import patch_list_member
from fastgate.control.model.restapis import _child_path, resource_view
from fastgate.control.names import (
    AUTHORIZATION_TYPES,
    HTTP_METHODS,
    INTEGRATION_TYPES,
    PASSTHROUGH_BEHAVIORS,
    PATH_PART,
    STATUS_CODE,
    new_id,
)


# an HTTP integration's URI: a scheme and a host (a stage variable may stand for the host)
_HTTP_URI = re.compile(r"https?://[^/?#\s]+.*", re.S)
# an AWS integration's URI: arn:PARTITION:apigateway:REGION:SERVICE:{path|action}/...
_AWS_URI = re.compile(r"arn:[^:]*:apigateway:[^:]*:([^:]+):(path|action)/(.+)", re.S)


def _check_integration_uri(itype: str, uri: str) -> None:
    """AWS's checks of PutIntegration's uri (its recorded answers)."""
    if itype in ("HTTP", "HTTP_PROXY"):
        if not _HTTP_URI.fullmatch(uri):
            raise BadRequest(msg.INTEGRATION_HTTP_URI)
    elif itype in ("AWS", "AWS_PROXY"):
        if "${stageVariables." in uri:
            return          # checked once a stage's variables are substituted (compile)
        if not uri.startswith("arn:"):
            raise BadRequest(msg.INVALID_ARN)
        m = _AWS_URI.fullmatch(uri)
        if m is None:
            raise BadRequest(msg.INTEGRATION_ARN_PATH_OR_ACTION)
        service, kind, rest = m.group(1).rpartition(".")[2], m.group(2), m.group(3)
        # a Lambda function's invocation path, or a Firehose action (AWS's recordings
        # refuse lambda:path/random/... and firehose:path/...)
        if itype == "AWS_PROXY" and not (
                (service == "lambda" and kind == "path" and rest.startswith("2015-03-31/functions/"))
                or (service == "firehose" and kind == "action")):
            raise BadRequest(msg.AWS_PROXY_TARGETS)


class Resources(ModelBase):
    # ---- resources

    def get_resources(self, p: dict) -> dict:
        self.fresh()
        api = self._api(p["restApiId"])
        embed = "methods" in (p.get("embed") or ())
        items = sorted(api.get("resources", ()), key=lambda r: r["path"])
        return _page([resource_view(r, embed) for r in items], p)

    def get_resource(self, p: dict) -> dict:
        self.fresh()
        api = self._api_of(p["restApiId"])
        return resource_view(self._resource(api, p["resourceId"]),
                             "methods" in (p.get("embed") or ()))

    def create_resource(self, p: dict) -> dict:
        part = _require_str(p, "pathPart", "pathPart")
        if not PATH_PART.match(part):
            raise BadRequest(msg.PATH_PART_INVALID)
        with self.change() as txn:
            api = self._edit_api(p["restApiId"])
            parent = self._resource(api, p["parentId"])
            if parent.get("pathPart", "").endswith("+}"):
                raise BadRequest(msg.GREEDY_CHILD.format(part=parent["pathPart"]))
            for r in api["resources"]:
                if r.get("parentId") == parent["id"]:
                    if r["pathPart"] == part:
                        raise Conflict(msg.SIBLING_SAME_NAME.format(part=part))
                    if r["pathPart"].startswith("{") and part.startswith("{"):
                        raise BadRequest(msg.VARIABLE_SIBLING.format(part=r["pathPart"]))
            resource = {"id": new_id(10), "parentId": parent["id"], "pathPart": part,
                        "path": _child_path(parent, part)}
            api["resources"].append(resource)
            self._save_api(txn, api)
        return resource_view(resource, False)

    def delete_resource(self, p: dict) -> dict:
        with self.change() as txn:
            api = self._edit_api(p["restApiId"])
            target = self._resource(api, p["resourceId"])
            if target.get("path") == "/":
                raise BadRequest(msg.ROOT_DELETE)
            doomed = {target["id"]}
            grew = True
            while grew:     # the resource and everything under it
                grew = False
                for r in api["resources"]:
                    if r.get("parentId") in doomed and r["id"] not in doomed:
                        doomed.add(r["id"])
                        grew = True
            api["resources"] = [r for r in api["resources"] if r["id"] not in doomed]
            self._save_api(txn, api)
        return {}

    # ---- methods, integrations, responses

    def _method_ctx(self, p: dict, create: bool = False):
        api = self._edit_api(p["restApiId"], nested=True)
        resource = self._resource(api, p["resourceId"])
        http_method = p["httpMethod"].upper()
        if create:
            return api, resource, http_method
        return api, resource, self._method(resource, http_method)

    def put_method(self, p: dict) -> dict:
        http_method = p["httpMethod"].upper()
        auth = _require_str(p, "authorizationType", "authorizationType")
        with self.change() as txn:
            # AWS's order: a missing API or resource (404) before a bad method (400)
            api, resource, _ = self._method_ctx(p, create=True)
            if http_method not in HTTP_METHODS:
                raise BadRequest(msg.INVALID_HTTP_METHOD)
            if auth not in AUTHORIZATION_TYPES:
                raise BadRequest(msg.INVALID_AUTHORIZATION_TYPE.format(
                                 allowed=",".join(AUTHORIZATION_TYPES)))
            methods = resource.setdefault("resourceMethods", {})
            if http_method in methods:
                raise Conflict(msg.METHOD_EXISTS)
            _check_method_authorizer(api, auth, p.get("authorizerId"))
            _check_request_parameters(p.get("requestParameters"))
            if p.get("requestValidatorId") is not None:
                _check_validator(api, p["requestValidatorId"])
            for model in (p.get("requestModels") or {}).values():
                _check_model(api, model)
            method = {"httpMethod": http_method, "authorizationType": auth,
                      "apiKeyRequired": bool(p.get("apiKeyRequired", False))}
            method.update(_copy_known(p, ("authorizerId", "operationName", "requestParameters",
                                          "requestModels", "requestValidatorId",
                                          "authorizationScopes")))
            methods[http_method] = method
            self._save_api(txn, api)
        return _clone(method)

    def get_method(self, p: dict) -> dict:
        self.fresh()
        api = self._api_of(p["restApiId"])
        method = _clone(self._method(self._resource(api, p["resourceId"]), p["httpMethod"]))
        integ = method.get("methodIntegration")
        if integ is not None and integ.get("type") == "MOCK":
            integ.pop("connectionType", None)     # AWS shows none on a MOCK integration
        return method

    def update_method(self, p: dict) -> dict:
        with self.change() as txn:
            api, _, method = self._method_ctx(p)
            for op in _patch_ops(p):
                _patch_method(api, method, op)
            if method["authorizationType"] in ("NONE", "AWS_IAM"):
                # an authorizer and its scopes mean nothing without CUSTOM/COGNITO
                method.pop("authorizerId", None)
                method.pop("authorizationScopes", None)
            _check_method_authorizer(api, method["authorizationType"], method.get("authorizerId"))
            self._save_api(txn, api)
        return _clone(method)

    def delete_method(self, p: dict) -> dict:
        with self.change() as txn:
            api, resource, method = self._method_ctx(p)
            del resource["resourceMethods"][method["httpMethod"]]
            self._save_api(txn, api)
        return {}

    def put_integration(self, p: dict) -> dict:
        itype = _require_str(p, "type", "type")
        if itype not in INTEGRATION_TYPES:
            raise BadRequest(msg.INVALID_INTEGRATION_TYPE.format(allowed=",".join(INTEGRATION_TYPES)))
        if itype in ("HTTP", "HTTP_PROXY", "AWS", "AWS_PROXY"):
            if not p.get("uri"):
                raise BadRequest(msg.INTEGRATION_URI_EMPTY)
            if not p.get("integrationHttpMethod"):
                raise BadRequest(msg.INTEGRATION_METHOD_EMPTY)
            _check_integration_uri(itype, p["uri"])
        timeout = p.get("timeoutInMillis")
        if timeout is not None and not 50 <= timeout <= 29000:
            raise BadRequest(msg.INTEGRATION_TIMEOUT)
        if p.get("passthroughBehavior") not in (None, *PASSTHROUGH_BEHAVIORS):
            raise BadRequest(msg.INVALID_PASSTHROUGH.format(allowed=",".join(PASSTHROUGH_BEHAVIORS)))
        with self.change() as txn:
            api, resource, method = self._method_ctx(p)
            integ = {"type": itype}
            if p.get("integrationHttpMethod"):
                integ["httpMethod"] = p["integrationHttpMethod"].upper()
            integ.update(_copy_known(p, ("uri", "connectionType", "connectionId", "credentials",
                                         "requestParameters", "requestTemplates",
                                         "passthroughBehavior", "cacheNamespace",
                                         "cacheKeyParameters", "contentHandling", "tlsConfig")))
            if itype in ("HTTP", "HTTP_PROXY"):
                # AWS fills in INTERNET for an HTTP integration only (its recordings show
                # none on AWS, AWS_PROXY and MOCK ones), and keeps no uri for a MOCK one
                integ.setdefault("connectionType", "INTERNET")
            elif itype == "MOCK":
                integ.pop("uri", None)
                integ.pop("httpMethod", None)
            integ.setdefault("passthroughBehavior", "WHEN_NO_MATCH")
            integ["timeoutInMillis"] = timeout if timeout is not None else 29000
            integ.setdefault("cacheNamespace", resource["id"])
            integ.setdefault("cacheKeyParameters", [])
            method["methodIntegration"] = integ
            self._save_api(txn, api)
        return _clone(integ)

    def get_integration(self, p: dict) -> dict:
        self.fresh()
        api = self._api_of(p["restApiId"])
        method = self._method(self._resource(api, p["resourceId"]), p["httpMethod"])
        if "methodIntegration" not in method:
            raise NotFound(msg.INVALID_INTEGRATION_ID)
        return _clone(method["methodIntegration"])

    def delete_integration(self, p: dict) -> dict:
        with self.change() as txn:
            api, _, method = self._method_ctx(p)
            if method.pop("methodIntegration", None) is None:
                raise NotFound(msg.INVALID_INTEGRATION_ID)
            self._save_api(txn, api)
        return {}

    def put_integration_response(self, p: dict) -> dict:
        status = p["statusCode"]
        if not STATUS_CODE.match(status):
            raise BadRequest(msg.INVALID_STATUS_CODE)
        with self.change() as txn:
            api, _, method = self._method_ctx(p)
            integ = method.get("methodIntegration")
            if integ is None:
                raise NotFound(msg.INVALID_INTEGRATION_ID)
            resp = {"statusCode": status}
            resp.update(_copy_known(p, ("selectionPattern", "responseParameters",
                                        "responseTemplates", "contentHandling")))
            if "responseTemplates" in resp:
                # AWS stores an empty template as none: it reads back as null
                resp["responseTemplates"] = {_check_content_type(ct): t or None
                                             for ct, t in resp["responseTemplates"].items()}
            integ.setdefault("integrationResponses", {})[status] = resp
            self._save_api(txn, api)
        return _clone(resp)

    def get_integration_response(self, p: dict) -> dict:
        self.fresh()
        integ = self.get_integration(p)
        resp = (integ.get("integrationResponses") or {}).get(p["statusCode"])
        if resp is None:
            raise NotFound(msg.INVALID_RESPONSE_STATUS)
        return resp

    def delete_integration_response(self, p: dict) -> dict:
        with self.change() as txn:
            api, resource, http_method = self._method_ctx(p, create=True)
            # a method that is not there (or no method at all, "WRONG") names the integration
            # here, not the method (AWS's recordings)
            method = (resource.get("resourceMethods") or {}).get(http_method) or {}
            if "methodIntegration" not in method:
                raise NotFound(msg.INVALID_INTEGRATION_ID)
            responses = method["methodIntegration"].get("integrationResponses") or {}
            if responses.pop(p["statusCode"], None) is None:
                raise NotFound(msg.INVALID_RESPONSE_STATUS)
            self._save_api(txn, api)
        return {}

    def put_method_response(self, p: dict) -> dict:
        status = p["statusCode"]
        if not STATUS_CODE.match(status):
            raise BadRequest(msg.INVALID_STATUS_CODE)
        with self.change() as txn:
            api, _, method = self._method_ctx(p)
            responses = method.setdefault("methodResponses", {})
            if status in responses:
                raise Conflict(msg.RESPONSE_EXISTS)
            resp = {"statusCode": status}
            resp.update(_copy_known(p, ("responseParameters", "responseModels")))
            responses[status] = resp
            self._save_api(txn, api)
        return _clone(resp)

    def get_method_response(self, p: dict) -> dict:
        self.fresh()
        method = self.get_method(p)
        resp = (method.get("methodResponses") or {}).get(p["statusCode"])
        if resp is None:
            raise NotFound(msg.INVALID_RESPONSE_STATUS)
        return resp

    def delete_method_response(self, p: dict) -> dict:
        with self.change() as txn:
            api, _, method = self._method_ctx(p)
            if (method.get("methodResponses") or {}).pop(p["statusCode"], None) is None:
                raise NotFound(msg.INVALID_RESPONSE_STATUS)
            self._save_api(txn, api)
        return {}

    def test_invoke_method(self, p: dict) -> dict:
        """TestInvokeMethod: the method as it is now, through the data plane's pipeline
        (fastgate/control/method_invoke.py)."""
        from fastgate.control.errors import ServiceUnavailable
        self.fresh()
        api = self._api_of(p["restApiId"])      # AWS names the resource
        resource = self._resource(api, p["resourceId"])
        self._method(resource, p["httpMethod"])
        if self.method_invoker is None:
            raise ServiceUnavailable("TestInvokeMethod needs the admin process's event loop")
        extra = {k: v for k, v in self.state.extra.items() if k in ("vpclink", "clientcertificate")}
        return self.method_invoker.invoke(_clone(api), _clone(resource), p["httpMethod"].upper(),
                                          _clone(extra), p)

# Method fields a patch replaces (and only replaces: AWS refuses add and remove on them)
_METHOD_SCALARS = ("authorizationType", "authorizerId", "operationName", "requestValidatorId",
                   "apiKeyRequired")


def _patch_method(api: dict, method: dict, op: dict) -> None:
    """One UpdateMethod patch operation, as AWS applies it and with AWS's messages."""
    path, value, kind = op["path"], op.get("value"), op["op"]
    top = path[1:]
    if top in _METHOD_SCALARS:
        if kind != "replace":
            raise BadRequest(msg.PATCH_OP_ONLY_REPLACE)
        if top == "authorizationType":
            if value not in AUTHORIZATION_TYPES:
                raise BadRequest(msg.INVALID_AUTHORIZATION_TYPE.format(
                                 allowed=",".join(AUTHORIZATION_TYPES)))
            method[top] = value
        elif top == "apiKeyRequired":
            # AWS reads anything but "true" as false (its recordings: "whatever" is false)
            method[top] = str(value).lower() == "true"
        elif value in (None, ""):
            method.pop(top, None)
        else:
            if top == "requestValidatorId":
                _check_validator(api, value)
            method[top] = value
    elif path == "/authorizationScopes" and kind in ("add", "remove"):
        scopes = patch_list_member(method, "authorizationScopes", kind, value)
        if not scopes:
            del method["authorizationScopes"]
    elif path.startswith("/requestParameters/") and kind in ("add", "replace", "remove"):
        name = _unescape_pointer(path[len("/requestParameters/"):])
        params = method.setdefault("requestParameters", {})
        if kind == "remove":
            params.pop(name, None)
        else:
            params[name] = _bool_value(value if value is not None else "false", path)
            _check_request_parameters(params)
        if not params:
            del method["requestParameters"]
    elif path.startswith("/requestModels/") and "/" not in path[len("/requestModels/"):] \
            and kind in ("add", "replace", "remove"):
        # "/requestModels/application~1json"; an unescaped "/" is another path (AWS refuses it)
        content_type = _unescape_pointer(path[len("/requestModels/"):])
        models = method.setdefault("requestModels", {})
        if kind == "remove":
            models.pop(content_type, None)
        else:
            _check_model(api, value)
            models[content_type] = value
        if not models:
            del method["requestModels"]
    else:
        raise BadRequest(msg.PATCH_PATH.format(path=path))


def _check_request_parameters(params) -> None:
    """A method's request parameters: named method.request.{querystring,header,path}.NAME
    (a boolean key arrives as "true", AWS's "Invalid mapping expression"), each NAME once."""
    seen = set()
    for key in params or {}:
        where, _, name = key.removeprefix("method.request.").partition(".")
        if not key.startswith("method.request.") or where not in ("querystring", "header", "path") \
                or not name:
            raise BadRequest(msg.INVALID_MAPPING_EXPRESSION.format(value=key))
        if name.lower() in seen:
            raise BadRequest(msg.PARAMETER_NAMES_UNIQUE)
        seen.add(name.lower())


def _check_validator(api: dict, validator_id: str) -> None:
    if not any(v.get("id") == validator_id for v in api.get("requestValidators") or ()):
        raise BadRequest(msg.INVALID_VALIDATOR_ID)


# every API has AWS's two predefined models
PREDEFINED_MODELS = ("Empty", "Error")


def _check_model(api: dict, name) -> None:
    if name in PREDEFINED_MODELS:
        return
    if not any(m.get("name") == name for m in api.get("models") or ()):
        raise BadRequest(msg.INVALID_MODEL_ID.format(name=name))


def _check_content_type(content_type: str) -> str:
    """A template's key must be a media type ("application/json"); AWS refuses "123"."""
    major, _, minor = content_type.partition("/")
    if not major or not minor or " " in content_type:
        raise BadRequest(msg.INVALID_CONTENT_TYPE.format(content_type=content_type))
    return content_type
