"""OpenAPI 2.0 / 3.0 / 3.1 import and export, in Amazon API Gateway's own shapes.

`import_openapi` turns an OpenAPI (or Swagger) document with the
`x-amazon-apigateway-*` extensions into "the API document": one JSON-serialisable dict
in the camelCase shapes of API Gateway's REST management API (RestApi, Resource, Method,
Integration, Authorizer, RequestValidator, Model, GatewayResponse), plus a few fastgate
keys (`protocolType`, `extensions`, HTTP API integration fields). `export_openapi` writes
such a document back as OpenAPI with the extensions, so that
import -> export -> import gives the same model. `load_document` reads the JSON or YAML
text.

The modules, one concern each:

    load.py          JSON/YAML text -> dict, duplicate keys refused
    document.py      the source document: version, local $refs, components; OpenAPIError
    importer.py      import_openapi: the parts below, in order
      restapi.py       the RestApi's fields from the root's extensions, servers and tags
      models.py        models from schemas, named and inline
      security.py      security schemes -> authorizers; security requirements -> methods
      validators.py    request validators
      resources.py     the resource tree of the paths, under the base path
      methods.py       operations -> methods: parameters, models, responses, authorization
      integrations.py  x-amazon-apigateway-integration -> Integration
      fields.py        checks on single fields, shared extension names
    merge.py         PutRestApi's merge and overwrite; GetRestApi's fields and order
    exporter.py      export_openapi

What each extension maps to, and where fastgate departs from AWS, is in docs/openapi.md.
"""

from fastgate.control.openapi.document import OpenAPIError
from fastgate.control.openapi.exporter import export_openapi
from fastgate.control.openapi.importer import import_openapi
from fastgate.control.openapi.load import load_document

__all__ = ["OpenAPIError", "load_document", "import_openapi", "export_openapi"]
