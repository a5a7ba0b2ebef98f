"""A Flask app through apig-wsgi."""

from apig_wsgi import make_lambda_handler
from flask import Flask, abort, jsonify, make_response, request

app = Flask(__name__)


@app.get("/hello/<name>")
def hello(name):
    response = make_response(jsonify(
        name=name, tags=request.args.getlist("tag"), cookies=request.cookies,
        script_root=request.script_root))
    response.set_cookie("seen", "yes")
    response.set_cookie("lang", "en")
    return response


@app.post("/upload")
def upload():
    response = make_response(request.get_data()[::-1])
    response.mimetype = "application/octet-stream"
    return response


@app.get("/missing")
def missing():
    abort(404)


@app.get("/crash")
def crash():
    raise RuntimeError("flask handler failed")


handler = make_lambda_handler(app, binary_support=True)
