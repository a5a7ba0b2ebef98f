"""An aws-lambda-powertools HTTP API app (payload 2.0)."""

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.shared.cookies import Cookie

app = APIGatewayHttpResolver()


@app.get("/todos/<todo_id>")
def get_todo(todo_id):
    event = app.current_event
    return Response(
        status_code=200, content_type="application/json",
        body={"id": todo_id, "tags": event.query_string_parameters.get("tag"),
              "cookies": event.cookies, "route": event.route_key},
        cookies=[Cookie(name="seen", value="yes"), Cookie(name="lang", value="en")])


@app.get("/logo")
def logo():
    return Response(status_code=200, content_type="image/png", body=b"\x89PNG\r\n\x1a\n\x00\x01")


@app.post("/echo")
def echo():
    return {"raw": app.current_event.decoded_body}


@app.get("/missing")
def missing():
    raise NotFoundError("no such todo")


@app.get("/crash")
def crash():
    raise ValueError("powertools handler failed")


def handler(event, context):
    return app.resolve(event, context)
