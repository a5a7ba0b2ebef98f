"""Lambda's Invoke API for the AWS integration tests, as a real process on a loopback port
(``python tests/fake_lambda.py PORT``): moto runs functions only in Docker, which the test
machines lack. POST /2015-03-31/functions/{name}/invocations answers as Lambda does for a
RequestResponse call: 200 with the function's result, or 200 with ``X-Amz-Function-Error:
Unhandled`` and the error object when the function raised. The "function" divides a by b
(b == 0 raises), after checking the call is SigV4-signed for lambda; a payload that is not
JSON is Lambda's 400 InvalidRequestContentException."""

from __future__ import annotations

import json
import re
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

INVOKE = re.compile(r"^/2015-03-31/functions/([^/]+)/invocations$")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, status: int, doc, headers=()) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        payload = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if INVOKE.match(self.path) is None:
            return self.answer(404, {"Message": f"no route {self.path}"})
        if "/lambda/aws4_request" not in (self.headers.get("Authorization") or ""):
            return self.answer(403, {"message": "Missing Authentication Token"})
        try:
            event = json.loads(payload)
        except ValueError:
            return self.answer(400, {"Type": "User", "message": "Could not parse request body into json"},
                               [("x-amzn-ErrorType", "InvalidRequestContentException")])
        if event.get("b") == 0:
            return self.answer(200, {"errorMessage": "Bad input: division by zero",
                                     "errorType": "ZeroDivisionError", "stackTrace": []},
                               [("X-Amz-Function-Error", "Unhandled")])
        return self.answer(200, {"q": event["a"] / event["b"]})

    def log_message(self, *args) -> None:
        pass


def main() -> None:
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()


if __name__ == "__main__":
    main()
