"""Models of a REST API: JSON Schema (draft 4) documents that method requests and responses
name by content type. They feed request validation (fastgate/phases/validation.py reads the
API document's "models") and export. Every API starts with AWS's two predefined models,
Empty and Error (CreateRestApi), with AWS's exact schema texts."""

from __future__ import annotations

import json
import re

from fastgate.control.errors import BadRequest, Conflict, NotFound
from fastgate.control.model.base import ModelBase, _clone, _page
from fastgate.control.messages import aws_message
from fastgate.control.model.patching import patch_operations, refuse
from fastgate.control.names import MODEL_URL_RE, new_id

# AWS's predefined models, text for text (the spacing of "$schema" differs between the two
# in AWS's own answers)
EMPTY_SCHEMA = ('{\n  "$schema": "http://json-schema.org/draft-04/schema#",\n'
                '  "title" : "Empty Schema",\n  "type" : "object"\n}')
ERROR_SCHEMA = ('{\n  "$schema" : "http://json-schema.org/draft-04/schema#",\n'
                '  "title" : "Error Schema",\n  "type" : "object",\n  "properties" : {\n'
                '    "message" : { "type" : "string" }\n  }\n}')
MODEL_NAME = re.compile(r"^[A-Za-z0-9]+$")
MODEL_PATCH = {"replace": ("/description", "/schema")}


def default_models() -> list[dict]:
    """Empty and Error, as AWS creates them with every REST API."""
    return [{"id": new_id(6), "name": "Empty", "contentType": "application/json",
             "description": "This is a default empty schema model", "schema": EMPTY_SCHEMA},
            {"id": new_id(6), "name": "Error", "contentType": "application/json",
             "description": "This is a default error schema model", "schema": ERROR_SCHEMA}]


def check_schema(schema) -> None:
    """AWS's rules for a model's schema: present, and a JSON object (draft 4)."""
    if not isinstance(schema, str) or not schema.strip():
        raise BadRequest(aws_message("model_schema_empty"))
    try:
        doc = json.loads(schema)
    except ValueError:
        raise BadRequest(aws_message("model_schema_invalid")) from None
    if not isinstance(doc, dict):
        raise BadRequest(aws_message("model_schema_invalid"))


def model_users(api: dict, name: str) -> list[str]:
    """Where a model is referenced: "{path}/{METHOD}" of each method request naming it (AWS's
    form: the root's GET is "//GET"), then the models whose schemas $ref it."""
    out = []
    for resource in api.get("resources", ()):
        for verb, method in (resource.get("resourceMethods") or {}).items():
            if name in (method.get("requestModels") or {}).values():
                out.append(f"{resource['path']}/{verb}")
    return out


def _refs(node, found: set) -> set:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                m = MODEL_URL_RE.match(value)
                if m:
                    found.add(m.group(1))
            else:
                _refs(value, found)
    elif isinstance(node, list):
        for v in node:
            _refs(v, found)
    return found


def flatten_schema(models: dict[str, dict], name: str) -> str:
    """GetModel's flatten=true: every $ref to another model of the API replaced by that
    model's schema (a model that refers back to one being expanded keeps its $ref)."""
    def expand(node, stack):
        if isinstance(node, dict):
            ref = node.get("$ref")
            m = MODEL_URL_RE.match(ref) if isinstance(ref, str) else None
            if m and m.group(1) in models and m.group(1) not in stack:
                target = json.loads(models[m.group(1)]["schema"])
                target.pop("$schema", None)
                return expand(target, stack | {m.group(1)})
            return {k: expand(v, stack) for k, v in node.items()}
        if isinstance(node, list):
            return [expand(v, stack) for v in node]
        return node
    return json.dumps(expand(json.loads(models[name]["schema"]), {name}), indent=2)


def model_template(models: dict[str, dict], name: str) -> str:
    """GetModelTemplate: a Velocity mapping template that writes a body of the model's shape
    from the integration's JSON ($input.path('$')), as AWS generates one."""
    schema = json.loads(flatten_schema(models, name))
    lines = ["#set($inputRoot = $input.path('$'))"]

    def write(node, expr: str, indent: str, depth: int) -> str:
        kind = node.get("type") if isinstance(node, dict) else None
        if kind == "object" or (isinstance(node, dict) and "properties" in node):
            props = node.get("properties") or {}
            if not props:
                return "{}"
            inner = indent + "  "
            parts = [f'{inner}"{key}" : {write(sub, f"{expr}.{key}", inner, depth)}'
                     for key, sub in props.items()]
            return "{\n" + ",\n".join(parts) + "\n" + indent + "}"
        if kind == "array":
            var = f"$elem{depth}" if depth else "$elem"
            inner = indent + "  "
            body = write(node.get("items") or {}, var, inner, depth + 1)
            return (f"[\n{inner}#foreach({var} in {expr})\n{inner}{body}"
                    f"#if($foreach.hasNext),#end\n{inner}#end\n{indent}]")
        if kind in ("number", "integer", "boolean"):
            return expr
        return f'"{expr}"'
    lines.append(write(schema, "$inputRoot", "", 0))
    return "\n".join(lines)


class Models(ModelBase):
    # ---- models

    @staticmethod
    def _models_of(api: dict) -> dict[str, dict]:
        return {m["name"]: m for m in api.get("models") or ()}

    def _model(self, api_id: str, name: str) -> tuple[dict, dict]:
        api = self.state.apis.get(api_id)
        model = self._models_of(api).get(name) if api is not None else None
        if model is None:
            # AWS names the model, not the API, when either is unknown
            raise NotFound(aws_message("model_not_found", name=name))
        return api, model

    def create_model(self, p: dict) -> dict:
        name = p.get("name") or ""
        with self.change() as txn:
            api = self._edit_api(p["restApiId"])
            if not name:
                raise BadRequest(aws_message("model_name_empty"))
            if not MODEL_NAME.match(name):
                raise BadRequest(aws_message("model_identifier", name=name))
            check_schema(p.get("schema"))
            models = api.setdefault("models", [])
            if any(m["name"] == name for m in models):
                raise Conflict(aws_message("model_exists"))
            model = {"id": new_id(6), "name": name, "contentType": p["contentType"],
                     "schema": p["schema"]}
            if p.get("description"):
                model["description"] = p["description"]
            models.append(model)
            self._save_api(txn, api)
        return _clone(model)

    def get_model(self, p: dict) -> dict:
        self.fresh()
        api, model = self._model(p["restApiId"], p["modelName"])
        out = _clone(model)
        if p.get("flatten"):
            out["schema"] = flatten_schema(self._models_of(api), model["name"])
        return out

    def get_models(self, p: dict) -> dict:
        self.fresh()
        api = self._api(p["restApiId"])
        return _page([_clone(m) for m in sorted(api.get("models") or (), key=lambda m: m["name"])], p)

    def get_model_template(self, p: dict) -> dict:
        self.fresh()
        api, model = self._model(p["restApiId"], p["modelName"])
        return {"value": model_template(self._models_of(api), model["name"])}

    def update_model(self, p: dict) -> dict:
        with self.change() as txn:
            api = _clone(self._model(p["restApiId"], p["modelName"])[0])
            model = self._models_of(api)[p["modelName"]]
            for op in patch_operations(p, "UpdateModel"):
                if op["op"] != "replace" or op.get("path") not in MODEL_PATCH["replace"]:
                    raise refuse(op, MODEL_PATCH)
                if op["path"] == "/schema":
                    check_schema(op.get("value"))
                    model["schema"] = op["value"]
                elif op.get("value"):
                    model["description"] = op["value"]
                else:
                    model.pop("description", None)
            self._save_api(txn, api)
        return _clone(model)

    def delete_model(self, p: dict) -> dict:
        name = p["modelName"]
        with self.change() as txn:
            api = _clone(self._model(p["restApiId"], name)[0])
            users = model_users(api, name)
            if users:
                raise Conflict(aws_message("model_in_use", name=name, where=users[0]))
            for other in api.get("models") or ():
                if other["name"] != name and name in _refs(_loads(other.get("schema")), set()):
                    raise Conflict(aws_message("model_in_model", name=name, other=other["name"]))
            api["models"] = [m for m in api["models"] if m["name"] != name]
            self._save_api(txn, api)
        return {}


def _loads(text):
    try:
        return json.loads(text or "{}")
    except ValueError:
        return {}
