"""Function names: handler names ("module:callable") and how a handler process imports
them, and the function an integration URI or Lambda ARN names."""

from __future__ import annotations

import importlib
import re
import sys

__all__ = ["HandlerSpecError", "LAMBDA_ARN", "lambda_function_name", "load_handler", "parse_handler"]

LAMBDA_ARN = re.compile(r"(?:^|:)function:([A-Za-z0-9_-]+)(?::[A-Za-z0-9_$-]+)?(?:/invocations)?$")
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")


class HandlerSpecError(ValueError):
    """A handler name that is not ``module:callable``, or that does not load."""


def parse_handler(spec: str) -> tuple[str, str]:
    """("pkg.module", "attr.path") from "pkg.module:attr.path".

    Lambda's own "module.function" form is accepted too (the last dot splits).
    """
    if ":" in spec:
        module, _, attr = spec.partition(":")
    else:
        module, _, attr = spec.rpartition(".")
    if not (_DOTTED.match(module) and _DOTTED.match(attr)):
        raise HandlerSpecError(f"handler {spec!r} is not 'module:callable'")
    return module, attr


def load_handler(spec: str, paths=()):
    """Import the handler, searching ``paths`` (the function path directories)
    before the installed packages, and return the callable."""
    module_name, attr = parse_handler(spec)
    for path in reversed(tuple(paths)):
        if path not in sys.path:
            sys.path.insert(0, path)
    try:
        obj = importlib.import_module(module_name)
    except ImportError as exc:
        raise HandlerSpecError(f"Unable to import module '{module_name}': {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise HandlerSpecError(
                f"Handler '{attr}' missing on module '{module_name}'") from None
    if not callable(obj):
        raise HandlerSpecError(f"Handler '{attr}' on module '{module_name}' is not callable")
    return obj


def lambda_function_name(uri: str) -> str | None:
    """The function name in an aws_proxy integration URI
    (arn:aws:apigateway:REGION:lambda:path/2015-03-31/functions/arn:aws:lambda:REGION:ACCOUNT:function:NAME[:ALIAS]/invocations),
    in a plain Lambda ARN, or a bare name; None when there is none."""
    m = LAMBDA_ARN.search(uri)
    if m:
        return m.group(1)
    if re.fullmatch(r"[A-Za-z0-9_-]+", uri or ""):
        return uri
    return None
