"""IAM policy evaluation for execute-api: resource policies and Lambda authorizer policies.

API Gateway evaluates two kinds of IAM policy documents against the request's
execute-api ARN (``arn:aws:execute-api:{region}:{account}:{api}/{stage}/{METHOD}/{path}``):

* the API's resource policy (``x-amazon-apigateway-policy``; in the API document a
  JSON string in ``policy``), with ``Principal: "*"`` statements and
  ``IpAddress``/``NotIpAddress`` conditions on ``aws:SourceIp``;
* the policy document a Lambda authorizer returns.

Both follow IAM's rule: an explicit Deny wins, otherwise an Allow is needed.
Resource and Action patterns use IAM's wildcards: ``*`` matches any run of
characters (slashes included), ``?`` exactly one.
https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html
https://docs.aws.amazon.com/apigateway/latest/developerguide/apigateway-resource-policies.html
"""

from __future__ import annotations

import ipaddress
import json
import re
from functools import lru_cache

from fastgate.phases.auth import ALLOW, AuthRequest, AuthResult, Check, deny

__all__ = [
    "PolicyError", "Statement", "compile_statements", "evaluate", "wildcard",
    "ResourcePolicyCheck", "IpListCheck", "parse_networks", "masked_arn",
    "ALLOWED", "EXPLICIT_DENY", "IMPLICIT_DENY",
]

# evaluate()'s outcomes
ALLOWED, EXPLICIT_DENY, IMPLICIT_DENY = "allow", "explicit_deny", "implicit_deny"

_INVOKE_ACTIONS = ("execute-api:invoke",)
_IP_CONDITIONS = {"ipaddress": False, "notipaddress": True}   # operator -> negated


class PolicyError(ValueError):
    """A policy document fastgate cannot evaluate (the message says where)."""


@lru_cache(maxsize=4096)
def wildcard(pattern: str, ignore_case: bool = False) -> re.Pattern:
    """IAM's wildcard pattern as a compiled regex (``*`` any run, ``?`` one character)."""
    parts = []
    for ch in pattern:
        parts.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
    return re.compile("".join(parts), re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def _as_list(value, where: str) -> list:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise PolicyError(f"{where}: must be a string or a list of strings")


def parse_networks(values, where: str) -> tuple:
    """CIDRs (or single addresses), IPv4 and IPv6, as ip_network objects."""
    nets = []
    for v in _as_list(values, where):
        try:
            nets.append(ipaddress.ip_network(v.strip(), strict=False))
        except ValueError:
            raise PolicyError(f"{where}: {v!r} is not an IP address or CIDR block") from None
    return tuple(nets)


def client_address(source_ip: str):
    """The client's address as an ip_address; an IPv4-mapped IPv6 address (::ffff:a.b.c.d,
    what a dual-stack socket reports for IPv4 clients) as the IPv4 address it carries."""
    try:
        addr = ipaddress.ip_address(source_ip)
    except ValueError:
        return None
    if addr.version == 6 and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _in_any(addr, nets) -> bool:
    # `addr in net` is False across IP versions, which is the rule we want
    return addr is not None and any(addr in net for net in nets)


class Statement:
    """One compiled statement: effect, action and resource patterns, IP conditions."""

    __slots__ = ("effect", "actions", "resources", "tail_resources", "not_resource",
                 "ip_conditions")

    def __init__(self, effect, actions, resources, tail_resources, not_resource, ip_conditions):
        self.effect = effect                  # "Allow" | "Deny"
        self.actions = actions                # compiled action patterns
        self.resources = resources            # compiled full-ARN patterns
        self.tail_resources = tail_resources  # compiled "execute-api:/..." shorthands (see below)
        self.not_resource = not_resource      # NotResource: the patterns say what does not match
        self.ip_conditions = ip_conditions    # ((negated, networks), ...): all must hold

    def applies(self, arn: str, tail: str, addr) -> bool:
        if not any(p.fullmatch("execute-api:Invoke") for p in self.actions):
            return False
        hit = (any(p.fullmatch(arn) for p in self.resources)
               or any(p.fullmatch(tail) for p in self.tail_resources))
        if hit == self.not_resource:
            return False
        for negated, nets in self.ip_conditions:
            if _in_any(addr, nets) == negated:
                return False
        return True


def compile_statements(doc, where: str, *, warn=None, resource_policy: bool = False
                       ) -> tuple[Statement, ...]:
    """A policy document (dict or JSON string) compiled for evaluate().

    Resource policies may name resources in API Gateway's shorthand
    ``execute-api:/{stage}/{METHOD}/{path}``, meaning this API in its own region
    and account; those match against the ARN's part after the API id.  Statements
    fastgate cannot evaluate (a Principal other than "*", conditions other than
    aws:SourceIp) are left out with a warning: fastgate has no IAM principals for
    anonymous callers to match, so such a statement would never apply on AWS either
    when the caller is anonymous.
    """
    if isinstance(doc, str):
        try:
            doc = json.loads(doc)
        except ValueError as exc:
            raise PolicyError(f"{where}: not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise PolicyError(f"{where}: a policy document is an object")
    raw = doc.get("Statement")
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list):
        raise PolicyError(f"{where}.Statement: must be a list of statements")
    out = []
    for i, st in enumerate(raw):
        at = f"{where}.Statement[{i}]"
        if not isinstance(st, dict):
            raise PolicyError(f"{at}: must be an object")
        effect = st.get("Effect")
        if effect not in ("Allow", "Deny"):
            raise PolicyError(f"{at}.Effect: must be Allow or Deny, not {effect!r}")
        if "Action" in st:
            actions = tuple(wildcard(a, True) for a in _as_list(st["Action"], f"{at}.Action"))
        elif "NotAction" in st:
            if warn:
                warn(f"{at}: NotAction is not supported; statement ignored")
            continue
        else:
            raise PolicyError(f"{at}: needs an Action")
        not_resource = "Resource" not in st and "NotResource" in st
        key = "NotResource" if not_resource else "Resource"
        if key not in st:
            raise PolicyError(f"{at}: needs a Resource")
        full, tail = [], []
        for r in _as_list(st[key], f"{at}.{key}"):
            if r.startswith("execute-api:/"):
                tail.append(wildcard(r[len("execute-api:"):]))
            else:
                full.append(wildcard(r))
        if resource_policy and "Principal" in st:
            principal = st["Principal"]
            if principal != "*" and principal != {"AWS": "*"} and principal != {"AWS": ["*"]}:
                if warn:
                    warn(f"{at}: Principal {json.dumps(principal)} names IAM principals; only "
                         "\"*\" is evaluated, statement ignored")
                continue
        conditions = []
        unsupported = False
        for op, block in (st.get("Condition") or {}).items():
            negated = _IP_CONDITIONS.get(op.lower())
            if negated is None or not isinstance(block, dict) or any(
                    k.lower() != "aws:sourceip" for k in block):
                unsupported = True
                break
            for k, values in block.items():
                conditions.append((negated, parse_networks(values, f"{at}.Condition.{op}.{k}")))
        if unsupported:
            if warn:
                warn(f"{at}: only IpAddress/NotIpAddress on aws:SourceIp conditions are "
                     "evaluated; statement ignored")
            continue
        out.append(Statement(effect, actions, tuple(full), tuple(tail), not_resource,
                             tuple(conditions)))
    return tuple(out)


def evaluate(statements, arn: str, tail: str, addr=None) -> str:
    """ALLOWED, EXPLICIT_DENY or IMPLICIT_DENY for one request ARN."""
    allowed = False
    for st in statements:
        if st.applies(arn, tail, addr):
            if st.effect == "Deny":
                return EXPLICIT_DENY
            allowed = True
    return ALLOWED if allowed else IMPLICIT_DENY


def masked_arn(arn: str) -> str:
    """AWS masks the account in the ARNs its denial messages show: ********1234."""
    parts = arn.split(":", 5)
    if len(parts) == 6 and len(parts[4]) > 4:
        parts[4] = "*" * 8 + parts[4][-4:]
    return ":".join(parts)


def anonymous_denied(arn: str, explicit: bool) -> AuthResult:
    msg = ("User: anonymous is not authorized to perform: execute-api:Invoke on resource: "
           + masked_arn(arn) + (" with an explicit deny" if explicit else ""))
    return deny("ACCESS_DENIED", msg)


def arn_tail(req: AuthRequest) -> str:
    """The ARN's part after the API id: /{stage}/{METHOD}/{path}."""
    return f"/{req.stage}/{req.method}/{req.stage_path[1:]}"


class ResourcePolicyCheck(Check):
    """An API's resource policy, evaluated as API Gateway does for anonymous callers:
    an explicit Deny refuses, and without a matching Allow the request is refused too."""

    kind = "policy"

    def __init__(self, statements: tuple[Statement, ...]):
        self.statements = statements

    def check(self, req: AuthRequest) -> AuthResult:
        arn = req.method_arn()
        outcome = evaluate(self.statements, arn, arn_tail(req), client_address(req.source_ip))
        if outcome == ALLOWED:
            return ALLOW
        return anonymous_denied(arn, outcome == EXPLICIT_DENY)


class IpListCheck(Check):
    """The YAML shorthand: ``ip_deny`` refuses its networks; a non-empty ``ip_allow``
    refuses everyone outside its networks.  Answers like a resource policy would."""

    kind = "policy"

    def __init__(self, allow=(), deny_=()):
        self.allow = tuple(allow)
        self.deny = tuple(deny_)

    def check(self, req: AuthRequest) -> AuthResult:
        addr = client_address(req.source_ip)
        if self.deny and _in_any(addr, self.deny):
            return anonymous_denied(req.method_arn(), True)
        if self.allow and not _in_any(addr, self.allow):
            return anonymous_denied(req.method_arn(), False)
        return ALLOW
