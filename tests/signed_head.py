"""A request head signed for the control API as botocore signs it, for tests that send
the body themselves (or never send it)."""

from __future__ import annotations


def signed_head(method: str, path: str, length: int, key: str, secret: str,
                content_sha256: str | None = None) -> bytes:
    """The head of a request announcing a `length`-byte body. Signed for an empty body: the
    signature verifies only for an empty body, or one matching `content_sha256` when that is
    declared (X-Amz-Content-SHA256, signed)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    headers = {"Host": "h"}
    if content_sha256 is not None:
        headers["X-Amz-Content-SHA256"] = content_sha256
    req = AWSRequest(method=method, url=f"http://h{path}", data=b"", headers=headers)
    SigV4Auth(Credentials(key, secret), "apigateway", "us-east-1").add_auth(req)
    lines = [f"{method} {path} HTTP/1.1", f"Content-Length: {length}"]
    lines += [f"{k}: {v}" for k, v in req.headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_answer(f) -> tuple[int, dict, bytes]:
    """(status, {lower-case name: value}, body) of a control API answer read from a
    buffered socket file (they always carry a Content-Length)."""
    status = int(f.readline().split()[1])
    headers = {}
    while (line := f.readline()) not in (b"\r\n", b""):
        k, _, v = line.decode().partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, f.read(int(headers["content-length"]))
