"""fastgate._core.paths: the canonical request path, held to a naive oracle written from
RFC 3986 (sections 2.3, 6.2.2.2 and 5.2.4) plus the gateway's two refusals."""

import re

import pytest
from hypothesis import example, given, settings, strategies as st

from fastgate._core.paths import PathVerdict, canonical, lenient_path

PATH_SAME, PATH_CHANGED = PathVerdict.PATH_SAME, PathVerdict.PATH_CHANGED
PATH_ABOVE_ROOT, PATH_AMBIGUOUS = PathVerdict.PATH_ABOVE_ROOT, PathVerdict.PATH_AMBIGUOUS
PATH_BAD_ESCAPE = PathVerdict.PATH_BAD_ESCAPE
LONG = 5000     # past paths.pxd's PATH_STACK: the heap buffer

UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
HEX = frozenset(b"0123456789abcdefABCDEF")
# what splits a segment for servers that read more than "/" as a separator
PIECE_SPLIT = re.compile(rb"\\|%2F|%5C")


def decode(segment: bytes):
    """Unreserved characters decoded, other escapes upper-cased; None for a bad "%"."""
    out = bytearray()
    i = 0
    while i < len(segment):
        if segment[i] != 0x25:
            out.append(segment[i])
            i += 1
            continue
        if i + 2 >= len(segment) or segment[i + 1] not in HEX or segment[i + 2] not in HEX:
            return None
        value = int(segment[i + 1:i + 3], 16)
        out += bytes([value]) if value in UNRESERVED else b"%" + segment[i + 1:i + 3].upper()
        i += 3
    return bytes(out)


def oracle(path: bytes):
    """The canonical form of path, or "above", "ambiguous", "escape"; slow and obvious on purpose.
    Segments are taken left to right (no escape decodes to "/"), so the first problem decides."""
    if not path.startswith(b"/"):
        return path
    kept = []
    last_dot = False
    for raw in path.split(b"/")[1:]:
        segment = decode(raw)
        if segment is None:
            return "escape"
        if segment in (b".", b".."):
            if segment == b"..":
                if not kept:
                    return "above"
                kept.pop()
            last_dot = True
            continue
        if any(piece.split(b";")[0] in (b".", b"..") for piece in PIECE_SPLIT.split(segment)):
            return "ambiguous"
        kept.append(segment)
        last_dot = False
    out = b"".join(b"/" + s for s in kept)
    if last_dot or not out:
        out += b"/"
    return b"/" + out.lstrip(b"/")


def check(path: bytes):
    verdict, result = canonical(path)
    want = oracle(path)
    if want == "above":
        assert (verdict, result) == (PATH_ABOVE_ROOT, None), path
    elif want == "ambiguous":
        assert (verdict, result) == (PATH_AMBIGUOUS, None), path
    elif want == "escape":
        assert (verdict, result) == (PATH_BAD_ESCAPE, None), path
    elif want == path:
        assert verdict == PATH_SAME and result is path, path    # nothing allocated
    else:
        assert (verdict, result) == (PATH_CHANGED, want), path
    return verdict, result


@pytest.mark.parametrize("path,want", [
    (b"/", b"/"),
    (b"/pets/1", b"/pets/1"),
    (b"/public/../admin/secret", b"/admin/secret"),
    (b"/public/%2e%2e/admin/secret", b"/admin/secret"),
    (b"/public/%2E%2E/admin/secret", b"/admin/secret"),
    (b"/public/.%2e/admin/secret", b"/admin/secret"),
    (b"/public/x/../../admin/secret", b"/admin/secret"),
    (b"/public/./admin", b"/public/admin"),
    (b"/a/b/..", b"/a/"),
    (b"/a/b/.", b"/a/b/"),
    (b"/a/..", b"/"),
    (b"/a/../", b"/"),
    (b"/.", b"/"),
    (b"/a//../b", b"/a/b"),            # ".." removes the empty segment (RFC 3986)
    (b"//admin/secret", b"/admin/secret"),
    (b"///", b"/"),
    (b"/a//b", b"/a//b"),              # kept: API Gateway passes inner "//" on
    (b"/%61dmin/secret", b"/admin/secret"),
    (b"/a%7eb/%7E", b"/a~b/~"),
    (b"/a%2fb", b"/a%2Fb"),
    (b"/caf%c3%a9", b"/caf%C3%A9"),
    (b"/.well-known/x", b"/.well-known/x"),
    (b"/a/.../b", b"/a/.../b"),
    (b"/a/..a/b", b"/a/..a/b"),
    (b"/a;x=1/b", b"/a;x=1/b"),
    (b"*", b"*"),
])
def test_examples(path, want):
    verdict, result = check(path)
    assert result == want


@pytest.mark.parametrize("path", [b"/..", b"/../", b"/x/../..", b"/public/../../admin",
                                  b"/%2e%2e", b"/a/./../../b", b"/./.."])
def test_climbing_above_the_root_is_refused(path):
    assert canonical(path) == (PATH_ABOVE_ROOT, None)


@pytest.mark.parametrize("path", [
    b"/public/..;/admin", b"/public/..;x=1/admin", b"/public/.;/admin", b"/public/%2e%2e;/admin",
    b"/public/..%2Fadmin", b"/public/..%2fadmin", b"/public/x%2F..%2F..%2Fadmin",
    b"/public/..%5Cadmin", b"/public/..\\admin", b"/public/x\\..\\..\\admin",
    b"/public/.%2F", b"/public/a%2F%2e%2e",
])
def test_a_dot_segment_hidden_from_the_slash_reading_is_refused(path):
    assert canonical(path) == (PATH_AMBIGUOUS, None)


@pytest.mark.parametrize("path", [b"/a%zz", b"/%4", b"/a/%", b"/%%32%65%%32%65/admin", b"/%4%41"])
def test_a_malformed_escape_is_refused(path):
    # decoding next to a bare "%" could make an escape the upstream decodes again
    assert canonical(path) == (PATH_BAD_ESCAPE, None)


def test_canonical_paths_come_back_as_the_same_object():
    for path in (b"/", b"/pets/1/toys", b"/a.b/c.d", b"/.well-known/openid-configuration",
                 b"/a%20b", b"/a//b/", b"/x;y=1"):
        verdict, result = canonical(path)
        assert verdict == PATH_SAME and result is path


def test_paths_longer_than_the_stack_buffer():
    assert canonical(b"/" + b"a" * LONG + b"/../b/%2e/c") == (PATH_CHANGED, b"/b/c")
    assert canonical(b"/x" * LONG + b"/%2E%2E" * (LONG + 1)) == (PATH_ABOVE_ROOT, None)
    check(b"/%2e" * LONG + b"/a" * LONG)


TOKENS = [b"/", b"/", b"/", b".", b"..", b"%2e", b"%2E", b".%2e", b"%2f", b"%2F", b"%5c", b"%5C",
          b"\\", b";", b";x=1", b"a", b"admin", b"%41", b"%61", b"%7e", b"%", b"%4", b"%zz",
          b"%00", b"%25", b"%c3%a9", b"\xc3\xa9", b"~", b"-", b"_"]


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=24).map(lambda parts: b"/" + b"".join(parts)))
@example(b"/public/../admin/secret")
@example(b"/a/b/../../..")
@example(b"//..")
@example(b"/.%2E%2f")
def test_matches_the_oracle(path):
    check(path)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=64).map(lambda b: b"/" + b))
def test_matches_the_oracle_on_any_bytes(path):
    check(path)


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=24).map(lambda parts: b"/" + b"".join(parts)))
def test_canonical_is_a_fixed_point(path):
    verdict, result = canonical(path)
    if result is not None:
        again = canonical(result)
        assert again[0] == PATH_SAME and again[1] is result


def lenient_oracle(path: bytes):
    """";parameters" dropped per segment, "\\" read as "/", runs of "/" merged; None if no change."""
    segments = [s.split(b";")[0] for s in path.replace(b"\\", b"/").split(b"/")]
    read = re.sub(rb"/+", b"/", b"/".join(segments))
    return None if read == path else read


@pytest.mark.parametrize("path,want", [
    (b"/admin;x/secret", b"/admin/secret"), (b"/a//b", b"/a/b"), (b"/a\\b", b"/a/b"),
    (b"/a;b;c/d;e", b"/a/d"), (b"/a/;x/b", b"/a/b"), (b"/;x", b"/"),
    (b"/a/b", None), (b"/a/", None), (b"/", None), (b"/a.b/c%3Bd", None),
])
def test_lenient_reading(path, want):
    assert lenient_path(path) == want


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=24).map(lambda parts: b"/" + b"".join(parts)))
def test_lenient_reading_matches_its_oracle(path):
    assert lenient_path(path) == lenient_oracle(path)
    assert lenient_path(b"/x" * LONG + path) == lenient_oracle(b"/x" * LONG + path)
