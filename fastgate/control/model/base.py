"""Model plumbing shared by every resource family: the store transaction, lookups
of the documents an operation names, and AWS's paging and patch helpers."""

from __future__ import annotations

import copy
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING

from fastgate.control import messages as msg
from fastgate.control.errors import BadRequest, NotFound, ValidationError
from fastgate.control.names import VARIABLE_NAME, VARIABLE_VALUE, is_v2_api

if TYPE_CHECKING:
    from fastgate.control.state import State
    from fastgate.control.store import Store, Txn

PAGE_DEFAULT, PAGE_MAX = 25, 500        # AWS's default and largest `limit`


def _clone(doc):
    return copy.deepcopy(doc)


def _now() -> int:
    # whole epoch seconds, one type for every date of every shape: AWS's JSON carries no
    # fraction in these timestamps
    return int(time.time())


def _page(items: list, p: dict) -> dict:
    """AWS-style paging: `limit` items from the opaque `position` on; the next position if more."""
    limit = p.get("limit")
    if limit is None:
        limit = PAGE_DEFAULT
    if not isinstance(limit, int) or not 1 <= limit <= PAGE_MAX:
        raise BadRequest(f"Invalid limit: must be between 1 and {PAGE_MAX}")
    start = 0
    if p.get("position"):
        if not str(p["position"]).isdigit():
            raise BadRequest("Invalid position parameter")
        start = int(p["position"])
    out = {"items": items[start:start + limit]}
    if start + limit < len(items):
        out["position"] = str(start + limit)
    return out


def _bool_value(value, path: str) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "false"):
        return str(value).lower() == "true"
    raise BadRequest(f"Invalid boolean value '{value}' for {path}")


def _require_str(p: dict, key: str, what: str | None = None) -> str:
    v = p.get(key)
    if not isinstance(v, str) or not v:
        raise BadRequest(f"{what or key} must not be blank")
    return v


def _copy_known(src: dict, keys) -> dict:
    return {k: _clone(src[k]) for k in keys if src.get(k) is not None}


def _unescape_pointer(seg: str) -> str:
    # JSON Pointer escaping (RFC 6901): ~1 is '/', ~0 is '~'
    return seg.replace("~1", "/").replace("~0", "~")


def _patch_ops(p: dict) -> list[dict]:
    ops = p.get("patchOperations") or []
    bad = [msg.ENUM_CONSTRAINT.format(value=op.get("op"), where=f"patchOperations.{i}.member.op",
                                      choices=", ".join(msg.ENUM_ORDER["Op"]))
           for i, op in enumerate(ops, 1) if op.get("op") not in msg.ENUM_ORDER["Op"]]
    if bad:     # (the control API checks this first, naming the operation's input)
        raise ValidationError(msg.validation_errors(bad))
    for op in ops:
        if not isinstance(op.get("path"), str) or not op["path"].startswith("/"):
            # AWS prints a missing path as "null"
            raise BadRequest(msg.PATCH_PATH.format(path=op.get("path") or "null"))
    return ops


def _bad_patch(op: dict, paths: dict[str, tuple[str, ...]] | None = None) -> BadRequest:
    """A patch operation the resource does not take. With `paths` (op -> the paths AWS lists
    for it, where its answer is recorded) AWS's own text: the paths of that op, or "Please
    choose supported operations" for an op the resource takes on no path."""
    if paths is None:
        return BadRequest(f"Invalid patch path '{op['path']}' specified for op '{op['op']}'.")
    if paths.get(op["op"]):
        return BadRequest(msg.PATCH_PATH_FOR_OP.format(path=op["path"], op=op["op"],
                                                       choices=", ".join(paths[op["op"]])))
    return BadRequest(msg.PATCH_PATH_UNSUPPORTED_OP.format(path=op["path"], op=op["op"]))


def _check_variables(variables, what: str = "variables") -> dict:
    if variables is None:
        return {}
    if not isinstance(variables, dict):
        raise BadRequest(f"{what} must be a map of strings")
    for name, value in variables.items():
        if not VARIABLE_NAME.match(name):
            raise BadRequest(f"Stage variable name '{name}' is invalid: it can only contain "
                             "alphanumeric characters and underscores (1 to 64 characters).")
        if not isinstance(value, str) or not VARIABLE_VALUE.match(value):
            raise BadRequest(f"Stage variable value for '{name}' is invalid: it can only contain "
                             "alphanumeric characters, spaces and -._~:/?#&=,+%@ (up to 2048 characters).")
    return dict(variables)


def _check_percent(value) -> float:
    try:
        pct = float(value)
    except (TypeError, ValueError):
        raise BadRequest(f"Invalid canary percentTraffic '{value}': must be a number") from None
    if not 0.0 <= pct <= 100.0:
        raise BadRequest("Canary traffic percentage must be between 0.0 and 100.0")
    return pct



class ModelBase:
    """What every resource family's operations stand on: the store and its State."""

    def __init__(self, store: "Store"):
        self.store = store
        self.state = store.load()
        # called with a committed transaction's writes [(kind, scope, id, doc|None)], on
        # the thread that ran the operation (fastgate.control.keys_sync replicates some kinds)
        self.on_commit = None
        # () -> {(api id, stage)} served from elsewhere than the store (the config's
        # `apis:`), which usage plans and stage keys may name too
        self.served_stages = lambda: set()
        # fastgate.control.authorizer_invoke.AuthorizerInvoker of the admin process (TestInvokeAuthorizer)
        self.authorizer_invoker = None
        # what the admin process's config holds, for the operations that show it: the
        # gateway-wide throttle as the Account's {"rateLimit", "burstLimit"} (or None), the
        # names of the config's upstream groups that VPC links name (None: not known here)
        self.account_throttle = lambda: None
        self.upstream_names = lambda: None
        # fastgate.control.method_invoke.MethodInvoker of the admin process (TestInvokeMethod)
        self.method_invoker = None

    # ---- plumbing

    def fresh(self) -> "State":
        """The current State, reloaded if another process has committed since."""
        if self.store.version() != self.state.version:
            self.state = self.store.load()
        return self.state

    @contextmanager
    def change(self):
        """One mutation: a store transaction over an up-to-date State; the writes reach
        the in-memory State only once the commit succeeded."""
        with self.store.transaction() as txn:
            if self.store.current_version(txn) != self.state.version:
                self.state = self.store.read_state(txn)
            yield txn
        if txn.writes:
            for kind, scope, id, doc in txn.writes:
                self.state.set(kind, scope, id, doc)
            self.state.version += 1
            if self.on_commit is not None:
                self.on_commit(txn.writes)

    def _api(self, api_id: str) -> dict:
        api = self.state.apis.get(api_id)
        if api is None or is_v2_api(api):
            raise NotFound(msg.invalid_api(api_id))
        return api

    def _api_of(self, api_id: str) -> dict:
        """The API of a call on something inside it (a resource, a method, an integration):
        AWS names the resource when the API does not exist."""
        api = self.state.apis.get(api_id)
        if api is None or is_v2_api(api):
            raise NotFound(msg.INVALID_RESOURCE_ID)
        return api

    @staticmethod
    def _resource(api: dict, resource_id: str) -> dict:
        for r in api.get("resources", ()):
            if r["id"] == resource_id:
                return r
        raise NotFound(msg.INVALID_RESOURCE_ID)

    @staticmethod
    def _method(resource: dict, http_method: str) -> dict:
        method = (resource.get("resourceMethods") or {}).get(http_method.upper())
        if method is None:
            raise NotFound(msg.INVALID_METHOD_ID)
        return method

    def _deployment(self, api_id: str, dep_id: str) -> dict:
        dep = self.state.deployments.get(api_id, {}).get(dep_id)
        if dep is None:
            raise NotFound(msg.INVALID_DEPLOYMENT_ID)
        return dep

    def _stage(self, api_id: str, name: str) -> dict:
        stage = self.state.stages.get(api_id, {}).get(name)
        if stage is None:
            raise NotFound(msg.INVALID_STAGE_ID)
        return stage

    def _domain(self, name: str) -> dict:
        domain = self.state.domains.get(name)
        if domain is None:
            raise NotFound(msg.INVALID_DOMAIN_NAME_ID)
        return domain

    def _edit_api(self, api_id: str, nested: bool = False) -> dict:
        """A private copy of an API document, to change and then save with _save_api
        (`nested`: for a call on something inside the API, see _api_of)."""
        return _clone(self._api_of(api_id) if nested else self._api(api_id))

    @staticmethod
    def _save_api(txn: "Txn", api: dict) -> None:
        txn.put("restapi", "", api["id"], api)
