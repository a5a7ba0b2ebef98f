"""fastgate/_core/fields.pyx: which header lines the gateway owns (the rest is in tests/e2e)."""

import pytest

from fastgate._core.fields import header_kind, named_tokens

OWNED = ["Host", "Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive",
         "Proxy-Connection", "TE", "Trailer", "Upgrade", "Expect", "X-Request-Id", "Via",
         "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Port", "Date",
         "Proxy-Authorization", "HTTP2-Settings", "Forwarded", "X-Real-IP", "True-Client-IP"]


def test_every_gateway_owned_header_has_its_own_kind_in_any_case():
    kinds = [header_kind(n.encode()) for n in OWNED]
    assert 0 not in kinds and len(set(kinds)) == len(OWNED)
    for name, kind in zip(OWNED, kinds):
        assert header_kind(name.upper().encode()) == kind
        assert header_kind(name.lower().encode()) == kind


@pytest.mark.parametrize("name", [b"", b"h", b"Hosts", b"hos", b"Content-Type", b"X-Request-Ids",
                                  b"x-forwarded-fo", b"Cookie", b"Authorization", b"Via2", b"ETag",
                                  b"Connection\x00", b"content_length", b"Forwarde", b"X-Real-IPs",
                                  b"proxy-authorizatio", b"Proxy-Authenticate", b"True-Client-Id",
                                  b"http2-setting", b"Fxrwarded"])
def test_other_headers_are_just_forwarded(name):
    assert header_kind(name) == 0


@pytest.mark.parametrize("value,tokens", [
    (b"keep-alive", None), (b"close", None), (b"Keep-Alive", None), (b"UPGRADE", None),
    (b"", None), (b" , ,", None),
    (b"keep-alive, X-Conn-Named", [b"x-conn-named"]),
    (b"\tTE ,Upgrade,  x-a\t, close,X-B", [b"te", b"x-a", b"x-b"]),
    (b"keep-alives", [b"keep-alives"]), (b"clos", [b"clos"]),
])
def test_connection_tokens_name_the_hop_fields_lowercased(value, tokens):
    """The fields a Connection header names (RFC 9110 section 7.6.1), without its options."""
    assert named_tokens(value) == tokens
