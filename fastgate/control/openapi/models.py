"""The API's models, from the document's schemas (definitions / components.schemas) and
from the inline schemas of bodies and responses, as API Gateway's importer makes them:
draft-4 JSON Schema strings whose `$ref`s are AWS's model URLs."""

from __future__ import annotations

import json
import re

from fastgate.control.names import MODEL_URL, new_id
from fastgate.control.openapi.document import Document, OpenAPIError, schemas_ref



class Models:
    """name -> Model of one import, in the order they were made."""

    def __init__(self, document: Document, api_id: str):
        self.document = document
        self.api_id = api_id
        self.by_name: dict[str, dict] = {}

    def load(self) -> None:
        """The document's named schemas, each a model of the same name."""
        schemas, where = self.document.component("schemas", "definitions")
        for name, schema in schemas.items():
            self._add(name, schema, f"{where}.{name}")

    def for_schema(self, schema, base_name: str, where: str) -> str:
        """The model a body or response schema uses: the one its `$ref` names, or a new
        one named after `base_name` for an inline schema."""
        name = self._ref_name(schema, where)
        if name is not None:
            if name not in self.by_name:
                raise OpenAPIError(f"{where}.$ref: model {name!r} is not defined")
            return name
        if not isinstance(schema, dict):
            raise OpenAPIError(f"{where}: a schema must be an object")
        return self._inline(schema, base_name, where)

    def _ref_name(self, schema, where: str) -> str | None:
        """The model a `{"$ref": "#/definitions/X"}` schema names, or None for inline ones."""
        if isinstance(schema, dict) and "$ref" in schema:
            ref = schema["$ref"]
            self.document.resolve(schema, where)
            prefix = schemas_ref(self.document.v3)
            if isinstance(ref, str) and ref.startswith(prefix):
                return ref[len(prefix):].replace("~1", "/").replace("~0", "~")
        return None

    def _add(self, name: str, schema, where: str) -> None:
        if not re.match(r"^[A-Za-z0-9]+$", name):
            raise OpenAPIError(f"{where}: model name {name!r} must be alphanumeric "
                               "(API Gateway's rule for model names)")
        if not isinstance(schema, dict):
            raise OpenAPIError(f"{where}: a schema must be an object")
        # the schema as written, its $refs turned into model URLs: AWS adds no $schema or
        # title (its recordings of ImportRestApi)
        stored = self._for_aws(schema, where)
        model = {"id": new_id(6), "name": name, "contentType": "application/json",
                 "schema": json.dumps(stored)}
        if isinstance(schema.get("description"), str):
            model["description"] = schema["description"]
        self.by_name[name] = model

    def _for_aws(self, node, where: str):
        """Copy a schema, turning `$ref`s to local models into AWS's model URLs."""
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                if key == "$ref" and isinstance(value, str):
                    name = self._ref_name(node, where)
                    if name is None or "/" in name:
                        raise OpenAPIError(
                            f"{where}.$ref: {value!r} must name a schema in "
                            f"{'components.schemas' if self.document.v3 else 'definitions'}")
                    out[key] = MODEL_URL.format(api_id=self.api_id) + name
                else:
                    out[key] = self._for_aws(value, f"{where}.{key}")
            return out
        if isinstance(node, list):
            return [self._for_aws(v, f"{where}.{i}") for i, v in enumerate(node)]
        return node

    def _inline(self, schema, base_name: str, where: str) -> str:
        """Name a model for an inline schema, as API Gateway's importer creates one."""
        name = re.sub(r"[^A-Za-z0-9]", "", base_name) or "Model"
        candidate, n = name, 1
        while candidate in self.by_name:
            n += 1
            candidate = f"{name}{n}"
        self._add(candidate, schema, where)
        return candidate
