"""Request validators: x-amazon-apigateway-request-validators at the root defines them by
name; x-amazon-apigateway-request-validator (at the root or on an operation) picks one."""

from __future__ import annotations

from fastgate.control.names import new_id
from fastgate.control.openapi.document import OpenAPIError

EXTENSION = "x-amazon-apigateway-request-validator"
DEFINITIONS = "x-amazon-apigateway-request-validators"


class RequestValidators:
    """name -> RequestValidator of one import."""

    def __init__(self):
        self.by_name: dict[str, dict] = {}
        self.default = None     # the root's x-amazon-apigateway-request-validator

    def load(self, root: dict) -> None:
        self._load_definitions(root.get(DEFINITIONS))
        self.default = root.get(EXTENSION)
        if self.default is not None:
            self.id_of(self.default, EXTENSION)

    def for_operation(self, op: dict, where: str) -> str | None:
        """The id of the validator an operation names, else of the document's default."""
        name = op.get(EXTENSION, self.default)
        if name is None:
            return None
        return self.id_of(name, f"{where}.{EXTENSION}" if EXTENSION in op else EXTENSION)

    def _load_definitions(self, value) -> None:
        if value is None:
            return
        if not isinstance(value, dict):
            raise OpenAPIError(f"{DEFINITIONS}: must be an object")
        for name, rules in value.items():
            at = f"{DEFINITIONS}.{name}"
            if not isinstance(rules, dict):
                raise OpenAPIError(f"{at}: must be an object")
            validator = {"id": new_id(6), "name": name,
                         "validateRequestBody": False, "validateRequestParameters": False}
            for key, item in rules.items():
                if key not in ("validateRequestBody", "validateRequestParameters"):
                    raise OpenAPIError(f"{at}.{key}: unknown property")
                if not isinstance(item, bool):
                    raise OpenAPIError(f"{at}.{key}: must be true or false")
                validator[key] = item
            self.by_name[name] = validator

    def id_of(self, name, where: str) -> str:
        """The id of the validator `name`; `where` is the extension that named it."""
        if not isinstance(name, str) or name not in self.by_name:
            raise OpenAPIError(f"{where}: request validator {name!r} is not defined in "
                               f"{DEFINITIONS}")
        return self.by_name[name]["id"]
