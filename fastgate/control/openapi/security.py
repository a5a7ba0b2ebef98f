"""Security schemes and requirements: the authorizers that x-amazon-apigateway-authorizer
defines, and the authorization each operation's `security` gives its method (an
authorizer, IAM through x-amazon-apigateway-authtype awsSigv4, or an API key)."""

from __future__ import annotations

import copy

from fastgate.control.names import AUTHORIZER_TYPES, METHOD_AUTHORIZER_TYPES, new_id
from fastgate.control.openapi.document import Document, OpenAPIError
from fastgate.control.openapi.fields import AUTHORIZER_FIELDS, is_aws_extension, not_implemented

# x-amazon-apigateway-authorizer's `type` -> Authorizer.type
_AUTHORIZER_TYPE_OF = {atype.lower(): atype for atype in AUTHORIZER_TYPES}


class Security:
    """The document's security schemes, the authorizers made from them, and the methods'
    authorization."""

    def __init__(self, document: Document, warnings: list[str]):
        self.document = document
        self.warnings = warnings
        self.authorizers: dict[str, dict] = {}   # security scheme name -> Authorizer
        self.schemes: dict[str, dict] = {}       # name -> resolved security scheme

    def load(self) -> None:
        schemes, where = self.document.component("securitySchemes", "securityDefinitions")
        for name, scheme in schemes.items():
            at = f"{where}.{name}"
            scheme = self.document.resolve(scheme, at)
            if not isinstance(scheme, dict):
                raise OpenAPIError(f"{at}: must be an object")
            self.schemes[name] = scheme
            for key in scheme:
                if is_aws_extension(key) and key not in (
                        "x-amazon-apigateway-authorizer", "x-amazon-apigateway-authtype"):
                    self.warnings.append(not_implemented(key, at) + " (dropped: security "
                                         "schemes are rebuilt from the authorizers)")
            if "x-amazon-apigateway-authorizer" in scheme:
                self.authorizers[name] = authorizer(name, scheme, at)

    def apply(self, method: dict, op: dict, where: str) -> None:
        """Set the method's authorization from the operation's security requirements, or
        from the document's when the operation has none."""
        if "security" in op:
            requirements, at = op["security"], f"{where}.security"
        else:
            requirements, at = self.document.root.get("security"), "security"
        if not requirements:
            return
        if not isinstance(requirements, list):
            raise OpenAPIError(f"{at}: must be a list")
        for i, requirement in enumerate(requirements):
            if not isinstance(requirement, dict):
                raise OpenAPIError(f"{at}.{i}: must be an object")
            for name, scopes in requirement.items():
                self._apply_scheme(method, name, scopes, f"{at}.{i}.{name}")

    def _apply_scheme(self, method: dict, name: str, scopes, where: str) -> None:
        scheme = self.schemes.get(name)
        if scheme is None:
            raise OpenAPIError(f"{where}: security scheme {name!r} is not defined")
        if name in self.authorizers:
            auth = self.authorizers[name]
            method["authorizationType"] = next(
                mtype for mtype, types in METHOD_AUTHORIZER_TYPES.items() if auth["type"] in types)
            method["authorizerId"] = auth["id"]
            if scopes and auth["type"] in ("COGNITO_USER_POOLS", "JWT"):
                method["authorizationScopes"] = [str(s) for s in scopes]
            return
        authtype = str(scheme.get("x-amazon-apigateway-authtype", "")).lower()
        if authtype == "awssigv4":
            method["authorizationType"] = "AWS_IAM"
        elif (scheme.get("type") == "apiKey" and scheme.get("in") == "header"
              and str(scheme.get("name", "")).lower() == "x-api-key"):
            method["apiKeyRequired"] = True
        else:
            self.warnings.append(
                f"security scheme {name!r} at {where}: no API Gateway authorizer, IAM or "
                "x-api-key mapping; not enforced")


def authorizer(name: str, scheme: dict, where: str) -> dict:
    """The Authorizer a security scheme's x-amazon-apigateway-authorizer defines."""
    ext = scheme["x-amazon-apigateway-authorizer"]
    at = f"{where}.x-amazon-apigateway-authorizer"
    if not isinstance(ext, dict):
        raise OpenAPIError(f"{at}: must be an object")
    atype = ext.get("type")
    if not isinstance(atype, str) or atype.lower() not in _AUTHORIZER_TYPE_OF:
        raise OpenAPIError(f"{at}.type: must be one of {', '.join(_AUTHORIZER_TYPE_OF)}, "
                           f"not {atype!r}")
    atype = _AUTHORIZER_TYPE_OF[atype.lower()]
    auth = {"id": new_id(6), "name": name, "type": atype}
    if "x-amazon-apigateway-authtype" in scheme:
        auth["authType"] = str(scheme["x-amazon-apigateway-authtype"])
    for key, value in ext.items():
        if key == "type":
            continue
        if key == "authorizerResultTtlInSeconds":
            try:
                ttl = int(value)
            except (TypeError, ValueError):
                raise OpenAPIError(f"{at}.{key}: must be an integer") from None
            if not 0 <= ttl <= 3600:
                raise OpenAPIError(f"{at}.{key}: must be from 0 to 3600 seconds")
            auth[key] = ttl
        elif key == "identitySource":
            if isinstance(value, list):
                value = ", ".join(str(v) for v in value)
            auth[key] = str(value)
        elif key in AUTHORIZER_FIELDS:
            auth[key] = copy.deepcopy(value)
        else:
            raise OpenAPIError(f"{at}.{key}: unknown property")
    if atype in ("TOKEN", "REQUEST") and "authorizerUri" not in auth:
        raise OpenAPIError(f"{at}.authorizerUri: required for a {atype.lower()} authorizer")
    if atype == "COGNITO_USER_POOLS" and not auth.get("providerARNs"):
        raise OpenAPIError(f"{at}.providerARNs: required for a cognito_user_pools authorizer")
    if atype == "JWT":
        jwt = auth.setdefault("jwtConfiguration", {})
        if not isinstance(jwt, dict):
            raise OpenAPIError(f"{at}.jwtConfiguration: must be an object")
        url = scheme.get("openIdConnectUrl")
        if "issuer" not in jwt and isinstance(url, str):
            # AWS finds the issuer from the scheme's openIdConnectUrl.
            jwt["issuer"] = url.removesuffix("/.well-known/openid-configuration")
        if "issuer" not in jwt:
            raise OpenAPIError(f"{at}.jwtConfiguration.issuer: required for a jwt authorizer")
    if "identitySource" not in auth and atype in ("TOKEN", "COGNITO_USER_POOLS"):
        # AWS takes a token authorizer's identity source from the scheme's header name.
        header = scheme.get("name") if scheme.get("in", "header") == "header" else None
        auth["identitySource"] = f"method.request.header.{header or 'Authorization'}"
    return auth


def auth_extension(method: dict, value, where: str) -> None:
    """An operation's x-amazon-apigateway-auth: NONE or AWS_IAM."""
    atype = value.get("type") if isinstance(value, dict) else None
    if not isinstance(atype, str) or atype.upper() not in ("NONE", "AWS_IAM"):
        raise OpenAPIError(f"{where}.type: must be NONE or AWS_IAM")
    method["authorizationType"] = atype.upper()
