"""API Gateway's rules for Lambda proxy results, every malformed case included."""

import base64

import pytest

from fastgate.phases.functions.errors import FunctionError, KINDS, error_response
from fastgate.phases.functions.responses import ResponseError, parse_response_v1, parse_response_v2


# --- payload 1.0 -------------------------------------------------------------------

def test_v1_full_response():
    status, headers, body = parse_response_v1({
        "statusCode": 201, "headers": {"Content-Type": "text/plain", "X-One": "1"},
        "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"]}, "body": "made", "isBase64Encoded": False})
    assert status == 201 and body == b"made"
    assert headers == [(b"Set-Cookie", b"a=1"), (b"Set-Cookie", b"b=2"),
                       (b"Content-Type", b"text/plain"), (b"X-One", b"1")]


def test_v1_numeric_string_status_and_minimal_result():
    assert parse_response_v1({"statusCode": "204"}) == (204, [], b"")
    assert parse_response_v1({"statusCode": 200.0, "body": None})[0] == 200


def test_v1_same_pair_in_both_header_maps_appears_once():
    _, headers, _ = parse_response_v1({
        "statusCode": 200, "headers": {"Vary": "Accept", "X-Only": "h"},
        "multiValueHeaders": {"vary": ["Accept", "Origin"]}})
    assert headers == [(b"vary", b"Accept"), (b"vary", b"Origin"), (b"X-Only", b"h")]


def test_v1_scalar_header_values_become_strings_null_is_dropped():
    _, headers, _ = parse_response_v1({
        "statusCode": 200, "headers": {"X-N": 5, "X-F": 1.5, "X-B": True, "X-Null": None},
        "multiValueHeaders": {"X-M": [1, False, None]}})
    assert headers == [(b"X-M", b"1"), (b"X-M", b"false"), (b"X-N", b"5"), (b"X-F", b"1.5"),
                       (b"X-B", b"true")]


def test_v1_base64_body_decoded():
    png = b"\x89PNG\r\n\x1a\n\x00"
    result = {"statusCode": 200, "body": base64.b64encode(png).decode(), "isBase64Encoded": True}
    assert parse_response_v1(result)[2] == png
    assert parse_response_v1(dict(result, isBase64Encoded="true"))[2] == png


def test_v1_rest_decodes_base64_only_when_accept_is_a_binary_media_type():
    encoded = base64.b64encode(b"\x00\x01").decode()
    result = {"statusCode": 200, "body": encoded, "isBase64Encoded": True}
    types = ("image/*", "application/octet-stream")
    assert parse_response_v1(result, accept=b"image/png", binary_media_types=types)[2] == b"\x00\x01"
    assert parse_response_v1(result, accept=b"application/json", binary_media_types=types)[2] == encoded.encode()
    assert parse_response_v1(result, accept=None, binary_media_types=types)[2] == encoded.encode()


@pytest.mark.parametrize("result", [
    {},                                                       # no statusCode
    {"body": "x"},                                            # no statusCode
    {"statusCode": 200, "cookies": ["a=1"]},                  # unknown key (a 2.0 key)
    {"statusCode": 200, "extra": 1},                          # unknown key
    {"statusCode": "OK"},                                     # not a number
    {"statusCode": "2OO"},
    {"statusCode": True},
    {"statusCode": None},
    {"statusCode": 200.5},
    {"statusCode": 99},                                       # not an HTTP status
    {"statusCode": 600},
    {"statusCode": 103},                                      # informational: never an answer
    {"statusCode": "100"},
    {"statusCode": [200]},
    {"statusCode": 200, "body": {"a": 1}},                    # body not a string
    {"statusCode": 200, "body": ["a"]},
    {"statusCode": 200, "headers": "Content-Type: x"},        # headers not an object
    {"statusCode": 200, "headers": {"X": {"nested": 1}}},
    {"statusCode": 200, "headers": {"X": ["a", "b"]}},
    {"statusCode": 200, "multiValueHeaders": {"X": "a"}},     # not an array
    {"statusCode": 200, "multiValueHeaders": ["X"]},
    {"statusCode": 200, "multiValueHeaders": {"X": [{"a": 1}]}},
    {"statusCode": 200, "body": "%%%not base64", "isBase64Encoded": True},
    {"statusCode": 200, "body": "YQ", "isBase64Encoded": True},       # bad padding
    {"statusCode": 200, "isBase64Encoded": "yes"},
    {"statusCode": 200, "isBase64Encoded": 1},
    {"statusCode": 200, "headers": {"X": "a\r\nInjected: 1"}},        # header splitting
    {"statusCode": 200, "headers": {"Bad Name": "a"}},
    "Hello",                                                  # not an object
    ["statusCode", 200],
    None,
    200,
])
def test_v1_malformed_results_are_502(result):
    with pytest.raises(ResponseError) as info:
        parse_response_v1(result)
    assert error_response(info.value) == (502, b'{"message": "Internal server error"}', "INTEGRATION_FAILURE")


# --- payload 2.0 -------------------------------------------------------------------

def test_v2_structured_response_with_cookies():
    status, headers, body = parse_response_v2({
        "statusCode": "201", "headers": {"content-type": "text/plain", "x-n": 3},
        "cookies": ["a=1; Path=/", "b=2; HttpOnly"], "body": "ok"})
    assert status == 201 and body == b"ok"
    assert headers == [(b"content-type", b"text/plain"), (b"x-n", b"3"),
                       (b"set-cookie", b"a=1; Path=/"), (b"set-cookie", b"b=2; HttpOnly")]


def test_v2_base64_always_decoded():
    result = {"statusCode": 200, "body": base64.b64encode(b"\xff\x00").decode(), "isBase64Encoded": True}
    assert parse_response_v2(result)[2] == b"\xff\x00"


@pytest.mark.parametrize("result,body", [
    ({"message": "hi"}, b'{"message":"hi"}'),          # an object without statusCode
    ({}, b"{}"),
    ("Hello from Lambda!", b'"Hello from Lambda!"'),   # a bare string is a JSON string body
    ([1, "two"], b'[1,"two"]'),
    (42, b"42"),
    (True, b"true"),
    (None, b"null"),
])
def test_v2_result_without_status_code_is_a_200_json_body(result, body):
    assert parse_response_v2(result) == (200, [(b"content-type", b"application/json")], body)


@pytest.mark.parametrize("result", [
    {"statusCode": "abc"},
    {"statusCode": 700},
    {"statusCode": 101},                 # informational: the compiled parser leaves it to this one
    {"statusCode": 200, "cookies": "a=1"},
    {"statusCode": 200, "cookies": [{"a": 1}]},
    {"statusCode": 200, "body": {"a": 1}},
    {"statusCode": 200, "headers": ["x"]},
    {"statusCode": 200, "body": "!!", "isBase64Encoded": True},
])
def test_v2_malformed_results(result):
    with pytest.raises(ResponseError) as info:
        parse_response_v2(result)
    assert error_response(info.value, http_api=True) == (
        500, b'{"message": "Internal Server Error"}', "INTEGRATION_FAILURE")


# --- function errors ----------------------------------------------------------------

@pytest.mark.parametrize("kind,status,body", [
    ("raised", 502, b'{"message": "Internal server error"}'),
    ("function_timeout", 502, b'{"message": "Internal server error"}'),
    ("crashed", 502, b'{"message": "Internal server error"}'),
    ("memory", 502, b'{"message": "Internal server error"}'),
    ("malformed", 502, b'{"message": "Internal server error"}'),
    ("timeout", 504, b'{"message": "Endpoint request timed out"}'),
    ("throttled", 500, b'{"message": "Internal server error"}'),
    ("service", 500, b'{"message": "Internal server error"}'),
])
def test_function_error_responses(kind, status, body):
    assert error_response(FunctionError(kind, "x"))[:2] == (status, body)


def test_http_api_function_errors():
    assert error_response(FunctionError("timeout", "x"), http_api=True)[:2] == (
        503, b'{"message": "Service Unavailable"}')
    for kind in set(KINDS) - {"timeout"}:
        assert error_response(FunctionError(kind, "x"), http_api=True)[:2] == (
            500, b'{"message": "Internal Server Error"}')


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError):
        FunctionError("oops", "x")
