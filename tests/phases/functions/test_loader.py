import pytest

from fastgate.phases.functions.loader import HandlerSpecError, load_handler, parse_handler

from .conftest import HANDLERS


@pytest.mark.parametrize("spec,parts", [
    ("app:handler", ("app", "handler")),
    ("pkg.mod:obj.method", ("pkg.mod", "obj.method")),
    ("lambda_function.lambda_handler", ("lambda_function", "lambda_handler")),   # Lambda's form
])
def test_parse_handler(spec, parts):
    assert parse_handler(spec) == parts


@pytest.mark.parametrize("spec", ["", "app", "app:", ":handler", "a b:c", "app:handler()", "1app:h"])
def test_bad_handler_names(spec):
    with pytest.raises(HandlerSpecError):
        parse_handler(spec)


def test_load_from_a_function_path():
    assert load_handler("basic:echo", [HANDLERS]).__name__ == "echo"
    with pytest.raises(HandlerSpecError, match="missing on module"):
        load_handler("basic:nothing", [HANDLERS])
    with pytest.raises(HandlerSpecError, match="Unable to import module"):
        load_handler("no_such_module_here:handler", [HANDLERS])
    with pytest.raises(HandlerSpecError, match="not callable"):
        load_handler("basic:CALLS", [HANDLERS])
