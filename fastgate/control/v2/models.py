"""Models (JSON schemas of an API, draft 4) and GetModelTemplate, the Velocity mapping
template AWS generates from a model's schema."""

from __future__ import annotations

import re

import orjson

from fastgate.control.errors import BadRequest, Conflict
from fastgate.control.model.base import _clone
from fastgate.control.v2.base import V2Base

MODEL_NAME = re.compile(r"^[A-Za-z0-9]+$")      # AWS: "Model name must be alphanumeric"
MODEL_IN = ("name", "contentType", "description", "schema")
MODEL_OUT = ("modelId", *MODEL_IN)


def _schema(text) -> dict:
    if not isinstance(text, str):
        raise BadRequest("Schema must be a JSON string")
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"Invalid model schema specified: {e}") from None
    if not isinstance(doc, dict):
        raise BadRequest("Invalid model schema specified: a schema is a JSON object")
    return doc


def model_template(schema: dict, models: dict) -> str:
    """The mapping template AWS's GetModelTemplate writes for a schema: the input's members
    in the schema's shape, strings quoted, arrays through #foreach."""
    lines = ["#set($inputRoot = $input.path('$'))"]

    def resolve(s: dict) -> dict:
        ref = s.get("$ref") if isinstance(s, dict) else None
        if isinstance(ref, str):
            name = ref.rstrip("/").rsplit("/", 1)[-1]
            target = next((m for m in models.values() if m["name"] == name), None)
            if target is not None and target.get("schema"):
                return resolve(orjson.loads(target["schema"]))
        return s if isinstance(s, dict) else {}

    def value(s: dict, expr: str, indent: str, depth: int) -> list[str]:
        s = resolve(s)
        kind = s.get("type")
        if kind == "object" or "properties" in s:
            props = list((s.get("properties") or {}).items())
            out = ["{"]
            for i, (name, sub) in enumerate(props):
                body = value(sub, f"{expr}.{name}", indent + "  ", depth + 1)
                body[0] = f'{indent}  "{name}" : {body[0]}'
                if i < len(props) - 1:
                    body[-1] += ","
                out.extend(body)
            out.append(f"{indent}}}")
            return out
        if kind == "array":
            var = f"$elem{depth}" if depth else "$elem"
            inner = value(s.get("items") or {}, var, indent + "  ", depth + 1)
            return ["[", f"#foreach({var} in {expr})", f"{indent}  {inner[0]}", *inner[1:],
                    "#if($foreach.hasNext),#end", "#end", f"{indent}]"]
        if kind in ("number", "integer", "boolean"):
            return [expr]
        return [f'"{expr}"']

    lines.extend(value(schema, "$inputRoot", "", 0))
    return "\n".join(lines)


class Models(V2Base):
    @staticmethod
    def model_view(model: dict) -> dict:
        return {k: _clone(model[k]) for k in MODEL_OUT if model.get(k) is not None}

    @staticmethod
    def _check_model(api: dict, model: dict) -> None:
        if not MODEL_NAME.match(model.get("name") or ""):
            raise BadRequest("Model name must be alphanumeric")
        for other in api["models"].values():
            if other["name"] == model["name"] and other["modelId"] != model["modelId"]:
                raise Conflict(f"Model name {model['name']} already exists for this API")
        _schema(model.get("schema"))

    def create_model(self, p: dict) -> dict:
        def check(api, model):
            model.setdefault("contentType", "application/json")
            self._check_model(api, model)
        return self._create_child(p, "models", "modelId", 6, MODEL_IN, check, self.model_view)

    def get_model(self, p: dict) -> dict:
        return self._get_child(p, "models", "modelId", "Model", self.model_view)

    def get_models(self, p: dict) -> dict:
        return self._list_children(p, "models", lambda m: m["name"], self.model_view)

    def update_model(self, p: dict) -> dict:
        return self._update_child(p, "models", "modelId", "Model", MODEL_IN, self._check_model,
                                  self.model_view)

    def delete_model(self, p: dict) -> dict:
        with self.change() as txn:
            api = self._edit_api2(p["apiId"])
            model = self._child(api, "models", p["modelId"], "Model")
            users = sorted(r["routeKey"] for r in api["routes"].values()
                           if model["name"] in (r.get("requestModels") or {}).values())
            if users:
                raise Conflict(f"Model {model['name']} is used by route(s) {', '.join(users)}")
            del api["models"][p["modelId"]]
            self._save_api2(txn, api)
        return {}

    def get_model_template(self, p: dict) -> dict:
        self.fresh()
        api = self._api2(p["apiId"])
        model = self._child(api, "models", p["modelId"], "Model")
        return {"value": model_template(_schema(model.get("schema")), api["models"])}
