"""A custom domain's routing rules (apigatewayv2 RoutingRules): which API stage a request to
the domain reaches, by its headers and base path, before (or instead of) the API mappings,
as the domain's routingMode says.

Rules are tried by priority, lowest first; the first whose conditions all hold wins (a rule
without conditions is a catch-all). A header condition matches a header by name in any case
and its value by a glob, case-sensitive, where ``*`` is any run of characters (AWS's
``Pet:Dog-*``); a base path condition matches the path's first segments (``orders`` or
``orders/v2``) whole. ``stripBasePath`` takes the matched base path off before the API routes
the request. fastgate/_core/exchange.pyx (find_mount) calls ``DomainRules.match`` for a host
that has rules.
"""

from __future__ import annotations

import re
from typing import Callable

ROUTING_RULE_ONLY = "ROUTING_RULE_ONLY"
ROUTING_RULE_THEN_API_MAPPING = "ROUTING_RULE_THEN_API_MAPPING"


def _glob(pattern: str):
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")).encode("latin-1"),
                      re.S)


class _Rule:
    __slots__ = ("headers", "base_path", "mount", "priority")

    def __init__(self, rule: dict, mount_of: Callable):
        self.priority = rule["priority"]
        self.headers, self.base_path = [], None
        for cond in rule.get("conditions") or ():
            if "matchHeaders" in cond:
                for hv in cond["matchHeaders"]["anyOf"]:
                    self.headers.append((hv["header"].lower().encode("latin-1"), _glob(hv["valueGlob"])))
            elif "matchBasePaths" in cond:
                self.base_path = b"/" + cond["matchBasePaths"]["anyOf"][0].strip("/").encode()
        invoke = rule["actions"][0]["invokeApi"]
        # the Mount the rule sends to: its prefix is what the API does not see
        strip = invoke.get("stripBasePath") and self.base_path is not None
        self.mount = mount_of(invoke["apiId"], invoke["stage"], self.base_path if strip else b"")

    def matches(self, ctx) -> bool:
        if self.base_path is not None:
            path, bp = ctx.path, self.base_path
            if not (path == bp or path.startswith(bp + b"/")):
                return False
        for name, glob in self.headers:
            value = ctx.header(name)
            if value is None or glob.fullmatch(value) is None:
                return False
        return True


class DomainRules:
    """One domain's rules, compiled against the stages served (mount_of(api, stage, prefix)
    gives the Mount, or None when that stage is not served: the rule is left out)."""

    __slots__ = ("rules", "only")

    def __init__(self, rules: list, mode: str, mount_of: Callable, warn: Callable):
        self.only = mode == ROUTING_RULE_ONLY     # else mappings after the rules
        self.rules = []
        for rule in sorted(rules, key=lambda r: r["priority"]):
            compiled = _Rule(rule, mount_of)
            if compiled.mount is None:
                invoke = rule["actions"][0]["invokeApi"]
                warn(f"routing rule {rule['routingRuleId']}: API {invoke['apiId']} stage "
                     f"{invoke['stage']} is not served; rule skipped")
                continue
            self.rules.append(compiled)

    def match(self, ctx):
        """The Mount of the first rule that matches ctx, or None."""
        for rule in self.rules:
            if rule.matches(ctx):
                return rule.mount
        return None
