"""The API state the gateway serves, and where it comes from.

`State` holds the control plane's documents in Amazon API Gateway's own JSON shapes:
rest API documents (AWS's RestApi shape plus its resources, methods and integrations,
see docs/control-api.md), frozen deployments, stages, domain names and base path
mappings, and other kinds (API keys, usage plans) by kind, scope and id. The control
API's store (fastgate.control.store) loads and saves it; `fastgate serve --openapi`
(`openapi_state`) and the config's `apis:` and `domains:` (`config_state`) make it from
files; `merge_states` joins the sources; fastgate.compile.apis compiles the result.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field

from fastgate.compile.apis import method_settings_key


@dataclass
class State:
    """Everything the control plane knows, as plain JSON-able dicts."""
    apis: dict[str, dict] = field(default_factory=dict)                    # api id -> API document
    deployments: dict[str, dict[str, dict]] = field(default_factory=dict)  # api id -> dep id -> deployment (with "api")
    stages: dict[str, dict[str, dict]] = field(default_factory=dict)       # api id -> stage name -> Stage
    domains: dict[str, dict] = field(default_factory=dict)                 # domain name -> DomainName
    mappings: dict[str, dict[str, dict]] = field(default_factory=dict)     # domain -> base path -> BasePathMapping
    extra: dict[str, dict[str, dict[str, dict]]] = field(default_factory=dict)  # other kinds: kind -> scope -> id -> doc
    version: int = 0                                                       # bumped by every committed change

    def set(self, kind: str, scope: str, id: str, doc: dict | None) -> None:
        """Put (or with doc None, remove) one stored entity."""
        if kind in ("restapi", "api"):     # "api": an apigatewayv2 API (fastgate.control.v2)
            table = self.apis
        elif kind == "domain":
            table = self.domains
        else:
            outer = {"deployment": self.deployments, "stage": self.stages,
                     "mapping": self.mappings}.get(kind)
            if outer is None:
                outer = self.extra.setdefault(kind, {})
            table = outer.setdefault(scope, {})
        if doc is None:
            table.pop(id, None)
            if kind not in ("restapi", "api", "domain") and not table:
                outer.pop(scope, None)
        else:
            table[id] = doc

    def entities(self):
        """Every stored entity as (kind, scope, id, doc): what set() was given."""
        for id, doc in self.apis.items():
            yield "restapi", "", id, doc
        for id, doc in self.domains.items():
            yield "domain", "", id, doc
        for kind, outer in (("deployment", self.deployments), ("stage", self.stages),
                            ("mapping", self.mappings), *self.extra.items()):
            for scope, table in outer.items():
                for id, doc in table.items():
                    yield kind, scope, id, doc


def merge_states(*states) -> State:
    """One State from several sources (YAML/--openapi first, then the store); an id
    present in two sources is an error, raised as ValueError."""
    out = State()
    for st in states:
        if st is None:
            continue
        for api_id, api in st.apis.items():
            if api_id in out.apis:
                raise ValueError(f"API id {api_id!r} is defined twice (config and data dir?)")
            out.apis[api_id] = api
            out.deployments[api_id] = dict(st.deployments.get(api_id, {}))
            out.stages[api_id] = dict(st.stages.get(api_id, {}))
        for name, dom in st.domains.items():
            if name in out.domains:
                raise ValueError(f"domain name {name!r} is defined twice")
            out.domains[name] = dom
            out.mappings[name] = dict(st.mappings.get(name, {}))
        for kind, scopes in getattr(st, "extra", {}).items():
            for scope, docs in scopes.items():
                out.extra.setdefault(kind, {}).setdefault(scope, {}).update(docs)
        out.version += getattr(st, "version", 0)
    return out


def static_deployment(api: dict, stage_name: str, variables: dict | None = None,
                      description: str = "") -> tuple[dict, dict]:
    """(deployment, stage) for an API served straight from a document (--openapi, YAML):
    one deployment whose id is derived from the document, so reloads of an unchanged
    document keep it."""
    digest = hashlib.sha256(json.dumps(api, sort_keys=True, default=str).encode()).hexdigest()
    dep = {"id": digest[:6], "description": description or "served from the document",
           "createdDate": api.get("createdDate", 0), "api": api}
    stage = {"stageName": stage_name, "deploymentId": dep["id"], "variables": dict(variables or {})}
    return dep, stage


def document_api_id(key: str) -> str:
    """A stable 10-character API id for a document served from a file."""
    return "".join("abcdefghijklmnopqrstuvwxyz0123456789"[b % 36]
                   for b in hashlib.sha256(key.encode()).digest()[:10])


def openapi_state(path: str, *, stages: dict[str, dict], api_id: str | None = None,
                  base_path: str = "ignore", warn=None, method_settings: dict | None = None) -> State:
    """The State of one OpenAPI document served as it is, with the given stages
    ({name: variables}) and their method settings ({name: {key: settings}}).
    Raises fastgate.control.openapi.OpenAPIError / OSError."""
    from fastgate.control.openapi import import_openapi, load_document
    with open(path, "rb") as f:
        doc = load_document(f.read(), path)
    api_id = api_id or document_api_id(os.path.abspath(path))
    api, warnings = import_openapi(doc, base_path=base_path, api_id=api_id)
    for w in warnings:
        if warn is not None:
            warn(f"{path}: {w}")
    state = State()
    state.apis[api_id] = api
    state.deployments[api_id] = {}
    state.stages[api_id] = {}
    for name, variables in stages.items():
        dep, stage = static_deployment(api, name, variables)
        if method_settings and method_settings.get(name):
            stage["methodSettings"] = method_settings[name]
        state.deployments[api_id][dep["id"]] = dep
        state.stages[api_id][name] = stage
    return state


def stage_method_settings(sc) -> dict:
    """A YAML stage's throttles and logging level in API Gateway's methodSettings form."""
    out = {}
    if sc.logging_level != "OFF":
        out["*/*"] = {"loggingLevel": sc.logging_level}
    if sc.cache_ttl_s:
        out.setdefault("*/*", {}).update(cachingEnabled=True, cacheTtlInSeconds=sc.cache_ttl_s)
    if sc.throttle is not None:
        out.setdefault("*/*", {}).update(throttlingRateLimit=sc.throttle.rate,
                                         throttlingBurstLimit=sc.throttle.burst)
    for key, tc in sc.method_throttles.items():
        path, _, method = key.rpartition("/")
        out[method_settings_key(path or "/", method)] = {
            "throttlingRateLimit": tc.rate, "throttlingBurstLimit": tc.burst}
    return out


def config_state(loaded, warn=None) -> State:
    """The APIs and domains a config file declares (`apis:`, `domains:`)."""
    config = loaded.config
    states = []
    base_dir = loaded.base_dir()
    for i, ac in enumerate(config.apis):
        path = os.path.join(base_dir, ac.openapi)
        try:
            states.append(openapi_state(
                path, stages={n: dict(s.variables) for n, s in ac.stages.items()},
                api_id=ac.id, base_path=ac.base_path, warn=warn,
                method_settings={n: stage_method_settings(s) for n, s in ac.stages.items()}))
        except OSError as e:
            raise loaded.error(("apis", i, "openapi"), f"cannot read {path}: {e.strerror}") from None
        except ValueError as e:
            raise loaded.error(("apis", i, "openapi"), str(e)) from None
    state = merge_states(*states)
    for i, dc in enumerate(config.domains):
        state.domains[dc.name.lower()] = domain = {"domainName": dc.name.lower()}
        if dc.certificate is not None:
            # the shape the control API stores (fastgate.control.model), so fastgate.compile.tls reads one kind
            # of document; the loader already checked the files
            domain["_certificateBody"] = _read_text(base_dir, dc.certificate, loaded, ("domains", i, "certificate"))
            domain["_certificatePrivateKey"] = _read_text(base_dir, dc.key, loaded, ("domains", i, "key"))
            if dc.truststore is not None:
                domain["mutualTlsAuthentication"] = {"truststoreUri": os.path.join(base_dir, dc.truststore)}
                domain["_mtlsRequired"] = dc.mtls_required
        maps = state.mappings.setdefault(dc.name.lower(), {})
        for j, mc in enumerate(dc.mappings):
            api_ids = {a for a in state.apis} | {ac.id for ac in config.apis if ac.id}
            if mc.api not in api_ids:
                raise loaded.error(("domains", i, "mappings", j, "api"),
                                   f"no API with id {mc.api!r} in apis:")
            maps[mc.base_path] = {"basePath": mc.base_path, "restApiId": mc.api, "stage": mc.stage}
    return state


def _read_text(base_dir: str, path: str, loaded, where: tuple) -> str:
    try:
        with open(os.path.join(base_dir, path), encoding="ascii") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise loaded.error(where, f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
