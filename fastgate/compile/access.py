"""API documents and YAML route specs -> the ordered checks of one method.

``compile_method_access`` reads an API document as fastgate.control.openapi imports it (AWS's
shapes: the API's ``authorizers`` and ``policy``, each Method's ``authorizationType``,
``authorizerId``, ``authorizationScopes``); ``compile_route_access`` reads the YAML
shorthand (docs/authorizers.md).  Both return the checks in the order API Gateway
applies them: the resource policy (or ip_allow/ip_deny) first, then the authorizer.

Key sets, Lambda result caches and the SigV4 replay cache live in an
:class:`fastgate.phases.auth.caches.AuthCaches` owned by the worker, so routes sharing an issuer or an authorizer
share them, and a reload that leaves an authorizer unchanged keeps its warm state.
"""

from __future__ import annotations

import json
import os
from typing import Mapping

from fastgate.phases.auth import Check
from fastgate.phases.auth.caches import AuthCaches
from fastgate.phases.auth.iam import IamCheck
from fastgate.phases.auth.jwt import DEFAULT_ALGORITHMS, JwtCheck
from fastgate.phases.auth.lambda_authorizer import (DEFAULT_TIMEOUT_MS, LambdaAuthorizer, LambdaCheck)
from fastgate.phases.auth.policy import (IpListCheck, PolicyError, ResourcePolicyCheck,
                                  compile_statements, parse_networks)

__all__ = ["AccessError", "compile_method_access", "compile_route_access",
           "cognito_issuer"]

REST_DEFAULT_TTL_S = 300       # authorizerResultTtlInSeconds when a REST authorizer omits it


class AccessError(ValueError):
    """A method's access configuration cannot be compiled; the route must not be served
    unprotected, so the caller answers it with a 500 (and logs the message)."""


# AWS SDKs' service-specific endpoint variable for Cognito user pools: set, a user pool's
# issuer is {endpoint}/{poolId} (a self-hosted or test identity provider) instead of
# https://cognito-idp.{region}.amazonaws.com/{poolId}
COGNITO_ENDPOINT_ENV = "AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER"


def cognito_issuer(provider_arn: str) -> str:
    """arn:aws:cognito-idp:{region}:{account}:userpool/{poolId} -> the pool's issuer URL."""
    parts = provider_arn.split(":", 5)
    if len(parts) != 6 or parts[2] != "cognito-idp" or not parts[5].startswith("userpool/"):
        raise AccessError(f"{provider_arn!r} is not a Cognito user pool ARN")
    pool = parts[5][len("userpool/"):]
    endpoint = os.environ.get(COGNITO_ENDPOINT_ENV)
    if endpoint:
        return f"{endpoint.rstrip('/')}/{pool}"
    return f"https://cognito-idp.{parts[3]}.amazonaws.com/{pool}"


def _policy_checks(api: dict, warn) -> list[Check]:
    policy = api.get("policy")
    if not policy:
        return []
    try:
        statements = compile_statements(policy, "policy", warn=warn, resource_policy=True)
    except PolicyError as exc:
        raise AccessError(f"resource policy: {exc}") from None
    return [ResourcePolicyCheck(statements)]


def _header_of(identity_source: str | None, default: str = "Authorization") -> str:
    """The header of a token identity source: method.request.header.X or $request.header.X."""
    source = (identity_source or "").split(",")[0].strip()
    for prefix in ("method.request.header.", "$request.header."):
        if source.startswith(prefix):
            return source[len(prefix):]
    if source:
        raise AccessError(f"identity source {source!r}: a JWT comes from a header")
    return default


def compile_method_access(api: dict, method: dict, *, invoke, http_client, warn,
                          iam_credentials: Mapping[str, tuple[str, str]],
                          caches: AuthCaches, cache_scope: str = "") -> list[Check]:
    """The checks of one Method of one API document, in API Gateway's order.
    cache_scope: what else keys the authorizers' cached results (the stage and its
    FlushStageAuthorizersCache generation), beside the API and authorizer."""
    checks = _policy_checks(api, warn)
    http_api = api.get("protocolType", "REST") == "HTTP"
    atype = (method.get("authorizationType") or "NONE").upper()
    if atype == "NONE":
        return checks
    if atype == "AWS_IAM":
        checks.append(IamCheck(iam_credentials, caches.replay))
        return checks
    auth_id = method.get("authorizerId")
    auth = next((a for a in api.get("authorizers", ()) if a.get("id") == auth_id), None)
    if auth is None:
        raise AccessError(f"authorizer {auth_id!r} of this method does not exist")
    atype_auth = auth.get("type", "")
    scopes = tuple(method.get("authorizationScopes") or ())
    scope = f"{api.get('id')}/{auth_id}{cache_scope}"
    if atype == "COGNITO_USER_POOLS" or atype_auth == "COGNITO_USER_POOLS":
        issuers = [cognito_issuer(arn) for arn in auth.get("providerARNs") or ()]
        if not issuers:
            raise AccessError(f"authorizer {auth.get('name')}: providerARNs is empty")
        keysets = {iss: caches.keyset(iss, jwks_uri=iss + "/.well-known/jwks.json",
                                      jwks_file=None, http_client=http_client) for iss in issuers}
        checks.append(JwtCheck(keysets=keysets, scopes=scopes, cognito=True, http_api=False,
                               header=_header_of(auth.get("identitySource")),
                               algorithms=("RS256",)))
        return checks
    if atype == "JWT" or atype_auth == "JWT":
        cfg = auth.get("jwtConfiguration") or {}
        issuer = cfg.get("issuer")
        audience = cfg.get("audience") or ()
        if not issuer:
            raise AccessError(f"authorizer {auth.get('name')}: jwtConfiguration.issuer is required")
        if not audience:
            raise AccessError(f"authorizer {auth.get('name')}: jwtConfiguration.audience needs "
                              "at least one entry")
        keyset = caches.keyset(issuer, jwks_uri=None, jwks_file=None, http_client=http_client)
        checks.append(JwtCheck(keysets={issuer: keyset}, audience=audience, scopes=scopes,
                               header=_header_of(auth.get("identitySource")), http_api=True))
        return checks
    if atype == "CUSTOM" or atype_auth in ("TOKEN", "REQUEST"):
        uri = auth.get("authorizerUri") or ""
        function = url = None
        if uri.startswith(("http://", "https://")):
            url = uri
        else:
            from fastgate.phases.functions.loader import lambda_function_name
            function = lambda_function_name(uri)
            if function is None:
                raise AccessError(f"authorizer {auth.get('name')}: no function in "
                                  f"authorizerUri {uri!r}")
        ttl = auth.get("authorizerResultTtlInSeconds")
        if ttl is None:
            ttl = 0 if http_api else REST_DEFAULT_TTL_S
        simple = bool(auth.get("enableSimpleResponses"))
        version = auth.get("authorizerPayloadFormatVersion") or ("2.0" if simple else "1.0")
        try:
            authorizer = LambdaAuthorizer(
                type=atype_auth if atype_auth in ("TOKEN", "REQUEST") else "REQUEST",
                function=function, url=url, identity_source=auth.get("identitySource"),
                validation_expression=auth.get("identityValidationExpression"), ttl_s=ttl,
                http_api=http_api, payload_version=version, simple_responses=simple,
                name=auth.get("name", ""))
        except ValueError as exc:
            raise AccessError(f"authorizer {auth.get('name')}: {exc}") from None
        checks.append(LambdaCheck(authorizer, caches.results(scope, authorizer), invoke=invoke,
                                  http_client=http_client))
        return checks
    raise AccessError(f"authorizationType {atype} is not supported")


def _strings(value, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise AccessError(f"{where}: must be a string or a list of strings")


def compile_route_access(spec: dict, *, api_id: str = "fastgate", http_api: bool = True,
                         invoke=None, http_client=None, warn=None,
                         iam_credentials: Mapping[str, tuple[str, str]] = {},
                         caches: AuthCaches, cache_scope: str = "") -> list[Check]:
    """The checks of a YAML route's ``auth:`` block (docs/authorizers.md has the shape):
    ``ip_allow``/``ip_deny``/``policy`` first, then one of ``jwt``, ``lambda``, ``iam``."""
    known = {"ip_allow", "ip_deny", "policy", "jwt", "lambda", "iam"}
    unknown = set(spec) - known
    if unknown:
        raise AccessError(f"auth: unknown keys {sorted(unknown)}; expected {sorted(known)}")
    checks: list[Check] = []
    try:
        if spec.get("policy"):
            policy = spec["policy"]
            if isinstance(policy, dict):
                policy = json.dumps(policy)
            checks += _policy_checks({"policy": policy}, warn)
        allow = parse_networks(spec["ip_allow"], "auth.ip_allow") if spec.get("ip_allow") else ()
        deny_ = parse_networks(spec["ip_deny"], "auth.ip_deny") if spec.get("ip_deny") else ()
    except PolicyError as exc:
        raise AccessError(str(exc)) from None
    if allow or deny_:
        checks.append(IpListCheck(allow, deny_))
    chosen = [k for k in ("jwt", "lambda", "iam") if spec.get(k)]
    if len(chosen) > 1:
        raise AccessError(f"auth: one authorizer per route, not {' and '.join(chosen)}")
    if not chosen:
        return checks
    if chosen[0] == "iam":
        checks.append(IamCheck(iam_credentials, caches.replay))
    elif chosen[0] == "jwt":
        checks.append(_yaml_jwt(spec["jwt"], http_api, http_client, caches))
    else:
        checks.append(_yaml_lambda(spec["lambda"], api_id, http_api, invoke, http_client, caches,
                                   cache_scope))
    return checks


_JWT_KEYS = {"issuer", "audience", "jwks_uri", "jwks_file", "algorithms", "scopes", "leeway_s",
             "header", "cognito", "refetch_interval_s"}


def _yaml_jwt(cfg: dict, http_api: bool, http_client, caches: AuthCaches) -> JwtCheck:
    if not isinstance(cfg, dict):
        raise AccessError("auth.jwt: must be a mapping")
    unknown = set(cfg) - _JWT_KEYS
    if unknown:
        raise AccessError(f"auth.jwt: unknown keys {sorted(unknown)}")
    issuers = _strings(cfg.get("issuer") or (), "auth.jwt.issuer")
    if not issuers:
        raise AccessError("auth.jwt.issuer: required")
    if cfg.get("jwks_uri") and cfg.get("jwks_file"):
        raise AccessError("auth.jwt: jwks_uri or jwks_file, not both")
    interval = cfg.get("refetch_interval_s")
    if interval is not None and (isinstance(interval, bool) or not isinstance(interval, (int, float))
                                 or interval < 0):
        raise AccessError("auth.jwt.refetch_interval_s: must be a number of seconds >= 0")
    try:
        keysets = {iss: caches.keyset(iss, jwks_uri=cfg.get("jwks_uri"),
                                      jwks_file=cfg.get("jwks_file"), http_client=http_client,
                                      refetch_interval_s=interval)
                   for iss in issuers}
        return JwtCheck(keysets=keysets, audience=_strings(cfg.get("audience") or (), "auth.jwt.audience"),
                        scopes=_strings(cfg.get("scopes") or (), "auth.jwt.scopes"),
                        algorithms=_strings(cfg.get("algorithms") or DEFAULT_ALGORITHMS,
                                            "auth.jwt.algorithms"),
                        leeway_s=float(cfg.get("leeway_s", 0)),
                        header=cfg.get("header", "Authorization"),
                        cognito=bool(cfg.get("cognito", False)), http_api=http_api)
    except (ValueError, OSError) as exc:
        raise AccessError(f"auth.jwt: {exc}") from None


_LAMBDA_KEYS = {"function", "url", "type", "identity_source", "validation_expression", "ttl_s",
                "cache_by_route", "payload_version", "simple_responses", "timeout_ms"}


def _yaml_lambda(cfg: dict, api_id: str, http_api: bool, invoke, http_client,
                 caches: AuthCaches, cache_scope: str = "") -> LambdaCheck:
    if not isinstance(cfg, dict):
        raise AccessError("auth.lambda: must be a mapping")
    unknown = set(cfg) - _LAMBDA_KEYS
    if unknown:
        raise AccessError(f"auth.lambda: unknown keys {sorted(unknown)}")
    atype = str(cfg.get("type", "REQUEST")).upper()
    source = cfg.get("identity_source")
    if source is None and atype == "TOKEN":
        source = "method.request.header.Authorization"
    try:
        authorizer = LambdaAuthorizer(
            type=atype, function=cfg.get("function"), url=cfg.get("url"),
            identity_source=source, validation_expression=cfg.get("validation_expression"),
            ttl_s=cfg.get("ttl_s", REST_DEFAULT_TTL_S), cache_by_route=bool(cfg.get("cache_by_route")),
            http_api=http_api, payload_version=str(cfg.get("payload_version", "2.0" if http_api else "1.0")),
            simple_responses=bool(cfg.get("simple_responses")),
            timeout_ms=int(cfg.get("timeout_ms", DEFAULT_TIMEOUT_MS)),
            name=cfg.get("function") or cfg.get("url"))
        # cache_scope: a stage and its cache generation (ResetAuthorizersCache starts afresh)
        scope = f"{api_id}/yaml:{authorizer.name}{cache_scope}"
        return LambdaCheck(authorizer, caches.results(scope, authorizer), invoke=invoke,
                           http_client=http_client)
    except ValueError as exc:
        raise AccessError(f"auth.lambda: {exc}") from None
