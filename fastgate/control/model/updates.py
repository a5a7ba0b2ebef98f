"""The Update* operations by patch of resources, integrations, integration and method
responses, gateway responses and domain names: paths, ops and errors as AWS applies them
(each list of operations applied all or nothing)."""

from __future__ import annotations

from fastgate.control.errors import BadRequest, Conflict, NotFound, ValidationError
from fastgate.control.model.base import ModelBase, _bool_value, _clone
from fastgate.control.model.gateway_responses import default_gateway_response
from fastgate.control.messages import aws_message
from fastgate.control.model.patching import patch_operations, pointer_tail, refuse
from fastgate.control.names import (
    CONNECTION_TYPES,
    CONTENT_HANDLING,
    GATEWAY_RESPONSE_STATUS,
    PASSTHROUGH_BEHAVIORS,
    PATH_PART,
    STATUS_CODE,
)

RESOURCE_PATCH = {"replace": ("/parentId", "/pathPart")}
# Integration members a `replace` sets as they are (strings)
INTEGRATION_SCALARS = ("uri", "httpMethod", "connectionType", "connectionId", "credentials",
                       "passthroughBehavior", "contentHandling", "cacheNamespace",
                       "timeoutInMillis", "tlsConfig/insecureSkipVerification")
INTEGRATION_PATCH = {"replace": tuple(f"/{k}" for k in INTEGRATION_SCALARS) + (
                         "/requestParameters/{name}", "/requestTemplates/{contentType}"),
                     "add": ("/requestParameters/{name}", "/requestTemplates/{contentType}",
                             "/cacheKeyParameters/{name}"),
                     "remove": ("/requestParameters/{name}", "/requestTemplates/{contentType}",
                                "/cacheKeyParameters/{name}", "/contentHandling")}
INTEGRATION_RESPONSE_PATCH = {"replace": ("/selectionPattern", "/contentHandling",
                                          "/responseParameters/{name}",
                                          "/responseTemplates/{contentType}"),
                              "add": ("/responseParameters/{name}", "/responseTemplates/{contentType}"),
                              "remove": ("/responseParameters/{name}",
                                         "/responseTemplates/{contentType}", "/contentHandling")}
DOMAIN_PATCH = {"replace": ("/certificateName", "/certificateArn", "/regionalCertificateName",
                            "/regionalCertificateArn", "/securityPolicy", "/endpointConfiguration/types/0",
                            "/mutualTlsAuthentication/truststoreUri",
                            "/mutualTlsAuthentication/truststoreVersion",
                            "/ownershipVerificationCertificateArn", "/routingMode")}


def _status_errors(status: str) -> list[str]:
    if STATUS_CODE.match(status or ""):
        return []
    return [aws_message("validation_pattern", value=status, where="statusCode",
                        pattern=r"[1-5]\d\d")]


def _set_map_entry(target: dict, key: str, name: str, op: dict, missing: str, convert=None) -> None:
    """add / replace / remove of one entry of a map member (requestTemplates, ...);
    replace and remove of an entry that is not there: 404 with AWS's text `missing`."""
    entries = target.get(key) or {}
    if op["op"] in ("replace", "remove") and name not in entries:
        raise NotFound(aws_message(missing))
    if op["op"] == "remove":
        entries.pop(name, None)
    else:
        value = op.get("value")
        entries[name] = convert(value) if convert is not None else value
    if entries:
        target[key] = entries
    else:
        target.pop(key, None)


class Updates(ModelBase):
    # ---- UpdateResource: rename (pathPart) and move (parentId)

    def update_resource(self, p: dict) -> dict:
        from fastgate.control.model.restapis import resource_view
        with self.change() as txn:
            api = self._edit_api(p["restApiId"])
            resource = self._resource(api, p["resourceId"])
            by_id = {r["id"]: r for r in api["resources"]}
            for op in patch_operations(p, "UpdateResource"):
                if op["op"] != "replace" or op.get("path") not in RESOURCE_PATCH["replace"]:
                    raise refuse(op, RESOURCE_PATCH)
                value = op.get("value") or ""
                if resource.get("path") == "/":
                    raise BadRequest(aws_message("resource_root_path_part" if op["path"] == "/pathPart"
                                                 else "resource_root_parent"))
                if op["path"] == "/parentId":
                    parent = by_id.get(value)
                    if parent is None:
                        raise NotFound(aws_message("resource_not_found"))
                    node = parent
                    while node is not None:          # the new parent may not be below it
                        if node["id"] == resource["id"]:
                            raise BadRequest(aws_message("resource_cyclical"))
                        node = by_id.get(node.get("parentId"))
                    resource["parentId"] = value
                else:
                    if not PATH_PART.match(value):
                        raise BadRequest("Resource's path part only allow a-zA-Z0-9._- and curly "
                                         "braces at the beginning and the end and an optional plus "
                                         "sign before the closing brace.")
                    resource["pathPart"] = value
                for other in api["resources"]:
                    if other is not resource and other.get("parentId") == resource["parentId"] \
                            and other.get("pathPart") == resource["pathPart"]:
                        raise Conflict(aws_message("resource_sibling_exists", part=resource["pathPart"]))
            self._repath(api, by_id)
            self._save_api(txn, api)
        return resource_view(resource, True)

    @staticmethod
    def _repath(api: dict, by_id: dict) -> None:
        """Every resource's path from its parents' (a move or rename changes the subtree)."""
        def path_of(r, seen=()):
            if r.get("path") == "/" and not r.get("parentId"):
                return "/"
            parent = path_of(by_id[r["parentId"]])
            return ("" if parent == "/" else parent) + "/" + r["pathPart"]
        for r in api["resources"]:
            r["path"] = path_of(r)

    # ---- UpdateIntegration

    def _integration_of(self, api: dict, p: dict) -> dict:
        resource = self._resource(api, p["resourceId"])
        method = (resource.get("resourceMethods") or {}).get(p["httpMethod"].upper())
        if method is None or "methodIntegration" not in method:
            raise NotFound(aws_message("integration_not_found"))
        return method["methodIntegration"]

    def update_integration(self, p: dict) -> dict:
        with self.change() as txn:
            api = self._edit_api(p["restApiId"])
            integ = self._integration_of(api, p)
            for op in patch_operations(p, "UpdateIntegration"):
                self._patch_integration(integ, op)
            if integ.get("connectionType") == "VPC_LINK" and not integ.get("connectionId"):
                raise BadRequest("connectionId must be specified for a VPC_LINK connection type")
            if integ.get("type") == "AWS":
                # the same refusal as PutIntegration's: a patched uri is no less checked
                from fastgate.phases.aws.checks import check_aws_uri
                problem = check_aws_uri(integ.get("uri") or "")
                if problem is not None:
                    raise BadRequest(problem)
            self._save_api(txn, api)
        return _clone(integ)

    @staticmethod
    def _patch_integration(integ: dict, op: dict) -> None:
        path, kind, value = op.get("path") or "", op["op"], op.get("value")
        top = path[1:]
        if kind == "replace" and top in INTEGRATION_SCALARS:
            if top == "timeoutInMillis":
                try:
                    value = int(value)
                except (TypeError, ValueError):
                    raise BadRequest(f"Invalid timeout value '{value}'") from None
                if not 50 <= value <= 29000:
                    raise BadRequest("Timeout should be between 50 ms and 29000 ms")
            elif top == "passthroughBehavior" and value not in PASSTHROUGH_BEHAVIORS:
                raise BadRequest("Invalid passthrough behavior specified. Valid options are "
                                 f"{','.join(PASSTHROUGH_BEHAVIORS)}")
            elif top == "contentHandling" and value not in CONTENT_HANDLING:
                raise BadRequest(f"Invalid content handling specified: {value}")
            elif top == "connectionType" and value not in CONNECTION_TYPES:
                raise BadRequest(f"Invalid connection type specified: {value}")
            elif top == "httpMethod":
                value = (value or "").upper()
            if top == "tlsConfig/insecureSkipVerification":
                integ.setdefault("tlsConfig", {})["insecureSkipVerification"] = _bool_value(value, path)
            elif top == "connectionType" and value == "INTERNET":
                integ["connectionType"] = value
                integ.pop("connectionId", None)
            elif value in (None, "") and top not in ("uri", "httpMethod"):
                integ.pop(top, None)
            else:
                integ[top] = value
            return
        if kind == "remove" and top == "contentHandling":
            integ.pop("contentHandling", None)
            return
        for key in ("requestParameters", "requestTemplates"):
            name = pointer_tail(path, "/" + key)
            if name is not None and kind in ("add", "replace", "remove"):
                _set_map_entry(integ, key, name, op, "patch_parameter_missing"
                               if key == "requestParameters" else "patch_content_type_missing")
                return
        name = pointer_tail(path, "/cacheKeyParameters")
        if name is not None and kind in ("add", "remove"):
            keys = integ.setdefault("cacheKeyParameters", [])
            if kind == "add" and name not in keys:
                keys.append(name)
            elif kind == "remove" and name in keys:
                keys.remove(name)
            return
        raise refuse(op, INTEGRATION_PATCH)

    # ---- UpdateIntegrationResponse

    def update_integration_response(self, p: dict) -> dict:
        ops = patch_operations(p, "UpdateIntegrationResponse", _status_errors(p["statusCode"]))
        with self.change() as txn:
            api = self._edit_api(p["restApiId"])
            integ = self._integration_of(api, p)
            resp = (integ.get("integrationResponses") or {}).get(p["statusCode"])
            if resp is None:
                raise NotFound(aws_message("response_status_not_found"))
            for op in ops:
                path, kind, value = op.get("path") or "", op["op"], op.get("value")
                if kind == "replace" and path == "/selectionPattern":
                    resp["selectionPattern"] = value if value is not None else ""
                elif kind == "replace" and path == "/contentHandling":
                    if value not in CONTENT_HANDLING:
                        raise BadRequest(f"Invalid content handling specified: {value}")
                    resp["contentHandling"] = value
                elif kind == "remove" and path == "/contentHandling":
                    resp.pop("contentHandling", None)
                elif pointer_tail(path, "/responseTemplates") is not None and kind in ("add", "replace", "remove"):
                    if kind != "remove" and not isinstance(value, str):
                        raise BadRequest(f"Invalid patch value  '{value}' specified for op "
                                         f"'{kind}'. Must be a string")
                    _set_map_entry(resp, "responseTemplates", pointer_tail(path, "/responseTemplates"),
                                   op, "patch_content_type_missing")
                elif pointer_tail(path, "/responseParameters") is not None and kind in ("add", "replace", "remove"):
                    _set_map_entry(resp, "responseParameters", pointer_tail(path, "/responseParameters"),
                                   op, "patch_parameter_missing")
                else:
                    raise refuse(op, INTEGRATION_RESPONSE_PATCH)
            self._save_api(txn, api)
        return _clone(resp)

    # ---- UpdateMethodResponse

    def update_method_response(self, p: dict) -> dict:
        ops = patch_operations(p, "UpdateMethodResponse", _status_errors(p["statusCode"]))
        with self.change() as txn:
            api = self._edit_api(p["restApiId"])
            method = self._method(self._resource(api, p["resourceId"]), p["httpMethod"])
            resp = (method.get("methodResponses") or {}).get(p["statusCode"])
            if resp is None:
                raise NotFound(aws_message("response_status_not_found"))
            models = {m["name"] for m in api.get("models") or ()}
            for op in ops:
                path = op.get("path") or ""
                param = pointer_tail(path, "/responseParameters")
                ctype = pointer_tail(path, "/responseModels")
                if param is not None and op["op"] in ("add", "replace", "remove"):
                    # AWS stores "true" as true and any other value as false
                    _set_map_entry(resp, "responseParameters", param, op, "patch_parameter_missing",
                                   lambda v: str(v).lower() == "true")
                elif ctype is not None and op["op"] in ("add", "replace", "remove"):
                    if op["op"] != "remove" and op.get("value") not in models:
                        raise BadRequest(aws_message("model_identifier", name=op.get("value")))
                    _set_map_entry(resp, "responseModels", ctype, op, "patch_content_type_missing")
                else:
                    raise BadRequest(aws_message("patch_path_invalid", path=path))
            self._save_api(txn, api)
        return _clone(resp)

    # ---- UpdateGatewayResponse

    def update_gateway_response(self, p: dict) -> dict:
        rtype = p["responseType"]
        if rtype not in GATEWAY_RESPONSE_STATUS:
            raise ValidationError("1 validation error detected: " + aws_message(
                "validation_enum", value=rtype, where="responseType",
                choices=", ".join(GATEWAY_RESPONSE_STATUS)))
        ops = patch_operations(p, "UpdateGatewayResponse")
        with self.change() as txn:
            api = self._edit_api(p["restApiId"])
            responses = api.setdefault("gatewayResponses", {})
            # a type not customised yet starts from its defaults
            resp = responses.get(rtype) or default_gateway_response(rtype)
            resp["defaultResponse"] = False
            for op in ops:
                path, kind, value = op.get("path"), op["op"], op.get("value")
                if path is None:
                    raise BadRequest(aws_message("patch_path_invalid", path="null"))
                if path == "/statusCode" and kind == "replace":
                    if not STATUS_CODE.match(str(value or "")):
                        raise BadRequest("Invalid status code specified. Must be a 3-digit code "
                                         "from 100 to 599")
                    resp["statusCode"] = value
                    continue
                for key in ("responseParameters", "responseTemplates"):
                    name = pointer_tail(path, "/" + key)
                    if name is not None and kind in ("add", "replace", "remove"):
                        if kind != "remove" and value in (None, ""):
                            raise BadRequest(aws_message("patch_null_or_empty", what=key))
                        _set_map_entry(resp, key, name, op, "patch_parameter_missing")
                        resp.setdefault(key, {})
                        break
                else:
                    raise BadRequest(aws_message("patch_path_invalid", path=path))
            responses[rtype] = resp
            self._save_api(txn, api)
        return _clone(resp)

    # ---- UpdateDomainName

    def update_domain_name(self, p: dict) -> dict:
        from fastgate.control.model.domains import check_truststore
        name = p["domainName"].lower()
        with self.change() as txn:
            domain = _clone(self._domain(name))
            for op in patch_operations(p, "UpdateDomainName"):
                path, value = op.get("path") or "", op.get("value")
                if op["op"] != "replace" or path not in DOMAIN_PATCH["replace"]:
                    raise refuse(op, DOMAIN_PATCH)
                if path == "/endpointConfiguration/types/0":
                    if value not in ("EDGE", "REGIONAL", "PRIVATE"):
                        raise BadRequest(f"Invalid endpoint type: {value}")
                    domain["endpointConfiguration"] = {**domain.get("endpointConfiguration", {}),
                                                       "types": [value]}
                elif path.startswith("/mutualTlsAuthentication/"):
                    mtls = domain.setdefault("mutualTlsAuthentication", {})
                    key = path.rsplit("/", 1)[1]
                    if key == "truststoreUri":
                        check_truststore(value or "")
                        mtls["truststoreWarnings"] = []
                    mtls[key] = value
                elif path == "/securityPolicy" and value not in ("TLS_1_0", "TLS_1_2"):
                    raise BadRequest(f"Invalid security policy: {value}")
                elif value in (None, ""):
                    domain.pop(path[1:], None)
                else:
                    domain[path[1:]] = value
            txn.put("domain", "", name, domain)
        return self._domain_view(domain)
