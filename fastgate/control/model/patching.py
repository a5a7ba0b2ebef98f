"""Patch operations as AWS reads them for the Update* operations of the newer resource
families: the op names checked first (ValidationException, every bad one listed), then each
path against what the operation supports, with AWS's two refusals: an op the path does not
take at all ("Please choose supported operations") and a path the op does not know ("Must be
one of: [...]")."""

from __future__ import annotations

from fastgate.control.errors import BadRequest, ValidationError
from fastgate.control.messages import aws_message, validation_errors

PATCH_OPS = ("add", "remove", "move", "test", "replace", "copy")


def patch_operations(p: dict, operation: str, extra_errors: list[str] = ()) -> list[dict]:
    """The call's patch operations; ValidationException when an `op` is not one of AWS's.
    operation: the Update* operation's name (its input shape names the errors)."""
    ops = p.get("patchOperations") or []
    errors = []
    for i, op in enumerate(ops, 1):
        if op.get("op") not in PATCH_OPS:
            errors.append(aws_message(
                "validation_enum", value=op.get("op"),
                where=f"{operation[0].lower()}{operation[1:]}Input.patchOperations.{i}.member.op",
                choices=", ".join(PATCH_OPS)))
    errors.extend(extra_errors)
    if errors:
        raise ValidationError(validation_errors(errors))
    return ops


def refuse(op: dict, supported: dict[str, tuple[str, ...]]) -> BadRequest:
    """AWS's error for a patch operation an Update* does not take; supported: op -> paths."""
    path = op.get("path")
    if op["op"] in supported:
        return BadRequest(aws_message("patch_path_not_one_of", path=path, op=op["op"],
                                      choices=", ".join(supported[op["op"]])))
    return BadRequest(aws_message("patch_op_unsupported", path=path, op=op["op"]))


def pointer_tail(path: str, prefix: str) -> str | None:
    """The JSON Pointer segment after `prefix` ("/responseModels/application~1json" ->
    "application/json"), or None when the path is not under it."""
    if not path.startswith(prefix + "/"):
        return None
    return path[len(prefix) + 1:].replace("~1", "/").replace("~0", "~")


def patch_list_member(doc: dict, key: str, op: str, value) -> list:
    """An add or remove patch on a list AWS treats as a set (providerARNs,
    authorizationScopes): add a value once, remove it if there. Returns the list."""
    items = doc.setdefault(key, [])
    if op == "add" and value not in items:
        items.append(value)
    elif op == "remove" and value in items:
        items.remove(value)
    return items
