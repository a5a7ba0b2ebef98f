"""Resource policies and the ip_allow/ip_deny shorthand, evaluated as API Gateway does."""

from __future__ import annotations

import json

import pytest

from fastgate.phases.auth.policy import (ALLOWED, EXPLICIT_DENY, IMPLICIT_DENY, IpListCheck, PolicyError,
                                  ResourcePolicyCheck, compile_statements, evaluate,
                                  parse_networks)

from .conftest import request

ARN = "arn:aws:execute-api:us-east-1:123456789012:abc123"


def policy(*statements) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def stmt(effect, resource="execute-api:/*", condition=None, action="execute-api:Invoke"):
    s = {"Effect": effect, "Principal": "*", "Action": action, "Resource": resource}
    if condition:
        s["Condition"] = condition
    return s


def check_of(doc, warn=None):
    return ResourcePolicyCheck(compile_statements(doc, "policy", warn=warn, resource_policy=True))


def test_ip_allow_v4_and_v6():
    check = check_of(policy(stmt("Allow", condition={
        "IpAddress": {"aws:SourceIp": ["10.0.0.0/8", "2001:db8::/32"]}})))
    assert check.check(request(source_ip="10.1.2.3")).allowed
    assert check.check(request(source_ip="2001:db8::1")).allowed
    # an IPv4 client seen through a dual-stack socket
    assert check.check(request(source_ip="::ffff:10.9.9.9")).allowed
    denied = check.check(request(source_ip="192.168.1.1"))
    assert (denied.error_type, denied.message) == (
        "ACCESS_DENIED", "User: anonymous is not authorized to perform: execute-api:Invoke on "
        "resource: arn:aws:execute-api:us-east-1:********9012:abc123/prod/GET/pets/1")
    assert not check.check(request(source_ip="2001:db9::1")).allowed


def test_explicit_deny_wins():
    check = check_of(policy(stmt("Allow"), stmt("Deny", condition={
        "IpAddress": {"aws:SourceIp": "203.0.113.0/24"}})))
    assert check.check(request(source_ip="198.51.100.1")).allowed
    denied = check.check(request(source_ip="203.0.113.7"))
    assert denied.message.endswith("abc123/prod/GET/pets/1 with an explicit deny")


def test_not_ip_address_deny():
    # the usual shape: allow everyone, deny all but the office
    check = check_of(policy(stmt("Allow"), stmt("Deny", condition={
        "NotIpAddress": {"aws:SourceIp": ["198.51.100.0/24"]}})))
    assert check.check(request(source_ip="198.51.100.20")).allowed
    assert "explicit deny" in check.check(request(source_ip="8.8.8.8")).message


def test_resource_wildcards():
    check = check_of(policy(
        stmt("Allow", resource=[f"{ARN}/prod/GET/pets/*", "execute-api:/*/POST/orders"]),
        stmt("Deny", resource=f"{ARN}/*/GET/pets/secret?")))
    assert check.check(request(stage_path="/pets/1")).allowed
    assert check.check(request(stage_path="/pets/a/b/c")).allowed        # * crosses slashes
    assert check.check(request(method="POST", stage_path="/orders", stage="dev")).allowed
    assert not check.check(request(method="POST", stage_path="/orders/1")).allowed
    assert not check.check(request(method="DELETE", stage_path="/pets/1")).allowed
    assert "explicit deny" in check.check(request(stage_path="/pets/secret1")).message
    assert check.check(request(stage_path="/pets/secret12")).allowed     # ? is one character
    assert not check.check(request(stage_path="/pets/1", stage="dev")).allowed


def test_no_matching_allow_is_implicit_deny():
    st = compile_statements(policy(stmt("Allow", resource=f"{ARN}/prod/GET/")), "p")
    assert evaluate(st, f"{ARN}/prod/GET/", "/prod/GET/") == ALLOWED
    assert evaluate(st, f"{ARN}/prod/GET/x", "/prod/GET/x") == IMPLICIT_DENY
    deny = compile_statements(policy(stmt("Deny", resource="*", action="execute-api:*")), "p")
    assert evaluate(deny, f"{ARN}/prod/GET/x", "") == EXPLICIT_DENY
    other = compile_statements(policy(stmt("Allow", resource="*", action="s3:GetObject")), "p")
    assert evaluate(other, f"{ARN}/prod/GET/x", "") == IMPLICIT_DENY


def test_unsupported_statements_warn_and_drop():
    warnings = []
    check = check_of(policy(
        stmt("Allow"),
        {"Effect": "Deny", "Principal": {"AWS": "arn:aws:iam::1:user/x"}, "Action": "*",
         "Resource": "*"},
        stmt("Deny", condition={"StringNotEquals": {"aws:SourceVpce": "vpce-1"}})), warnings.append)
    assert check.check(request()).allowed
    assert len(warnings) == 2


def test_bad_policies():
    for doc in ("{", "[]", policy({"Effect": "Maybe", "Action": "*", "Resource": "*"}),
                policy(stmt("Allow", condition={"IpAddress": {"aws:SourceIp": "10.0.0.300/8"}}))):
        with pytest.raises(PolicyError):
            compile_statements(doc, "p")


def test_ip_lists():
    check = IpListCheck(parse_networks(["10.0.0.0/8", "::1"], "a"),
                        parse_networks("10.6.6.0/24", "d"))
    assert check.check(request(source_ip="10.1.1.1")).allowed
    assert check.check(request(source_ip="::1")).allowed
    assert "explicit deny" in check.check(request(source_ip="10.6.6.6")).message
    outside = check.check(request(source_ip="172.16.0.1"))
    assert outside.error_type == "ACCESS_DENIED" and "explicit" not in outside.message
    assert not check.check(request(source_ip="not-an-ip")).allowed
    deny_only = IpListCheck((), parse_networks(["0.0.0.0/0"], "d"))
    assert deny_only.check(request(source_ip="::2")).allowed     # v4 rules leave v6 alone
