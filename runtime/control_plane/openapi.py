"""The REST API's OpenAPI 3.1 document, generated from the app's route table (GET /api/v1/openapi.json)."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.convertors import FloatConvertor, IntegerConvertor
from starlette.routing import BaseRoute, Mount, Route

from streamforge.engine.flow import FlowDocument
from streamforge.runtime.protocol import Heartbeat, Registration

TITLE = "StreamForge control plane"
ERROR = {"$ref": "#/components/schemas/Error"}
# The bodies a pydantic model describes exactly; every other POST/PUT takes a JSON object its handler checks field by
# field (its 4xx answer says what to send). A test checks that each key is a route of the app.
BODY_MODELS: Mapping[tuple[str, str], type[BaseModel]] = {
    ("POST", "/api/v1/flows"): FlowDocument,
    ("PUT", "/api/v1/flows/{flow}"): FlowDocument,
    ("POST", "/api/v1/flows/import"): FlowDocument,
    ("POST", "/api/v1/flows/{flow}/changes"): FlowDocument,
    ("POST", "/api/v1/gateways/register"): Registration,
    ("POST", "/api/v1/gateways/{gateway}/sync"): Heartbeat,
}
# Routes that read no body although their method could carry one (a test checks that each is a route of the app).
NO_BODY = frozenset({
    ("POST", "/api/v1/flows/{flow}/undeploy"), ("POST", "/api/v1/flows/{flow}/versions/{version}/restore"),
    ("POST", "/api/v1/gateways/{gateway}/token"), ("POST", "/api/v1/gateways/{gateway}/approve"),
    ("POST", "/api/v1/gateways/{gateway}/reject"), ("DELETE", "/api/v1/flows/{flow}"),
    ("DELETE", "/api/v1/secrets/{name}"),
})  # fmt: skip


def http_routes(routes: Sequence[BaseRoute], skip: Collection[BaseRoute] = (),
                prefix: str = "") -> Iterator[tuple[str, str, Route]]:  # fmt: skip
    """(method, path template, route) of every HTTP route, mounts walked into; websockets and `skip` left out."""
    for route in routes:
        if route in skip:
            continue
        if isinstance(route, Mount):
            yield from http_routes(route.routes, skip, prefix + route.path)
        elif isinstance(route, Route):
            for method in sorted(route.methods or ()):
                if method != "HEAD":  # Starlette's own twin of each GET
                    yield method, prefix + route.path_format, route


def _parameter(name: str, convertor: Any) -> dict[str, Any]:
    kind = {IntegerConvertor: "integer", FloatConvertor: "number"}.get(type(convertor), "string")
    schema: dict[str, Any] = {"type": kind, **({"minimum": 0} if kind == "integer" else {})}
    return {"name": name, "in": "path", "required": True, "schema": schema}


def openapi_document(
    routes: Sequence[BaseRoute], skip: Collection[BaseRoute] = (), version: str = "1"
) -> dict[str, Any]:
    """Every HTTP route (but `skip`: the editor's files, /mcp) with its path parameters and request body; the error
    answer's shape is shared by all (the schema registry's routes answer in Confluent's shape instead)."""
    models = sorted(set(BODY_MODELS.values()), key=lambda model: model.__name__)
    references, definitions = models_json_schema([(model, "validation") for model in models],
                                                 ref_template="#/components/schemas/{model}")  # fmt: skip
    paths: dict[str, dict[str, Any]] = {}
    for method, path, route in http_routes(routes, skip):
        operation: dict[str, Any] = {
            "operationId": re.sub(r"[^A-Za-z0-9]+", "_", f"{method.lower()}{path}").strip("_"),
            "responses": {"200": {"description": "OK", "content": {"application/json": {}}},
                          "default": {"description": "Refused: what was wrong and what to do",
                                      "content": {"application/json": {"schema": ERROR}}}},
        }  # fmt: skip
        parameters = [_parameter(name, convertor) for name, convertor in route.param_convertors.items()]
        if parameters:
            operation["parameters"] = parameters
        model = BODY_MODELS.get((method, path))
        if model is not None:
            schema = references[(model, "validation")]
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
        elif method in ("POST", "PUT", "DELETE") and (method, path) not in NO_BODY:
            operation["requestBody"] = {"required": False, "content": {"application/json": {"schema": {}}}}
        paths.setdefault(path, {})[method.lower()] = operation
    components = {**definitions.get("$defs", {}), "Error": _ERROR_SCHEMA}
    return {
        "openapi": "3.1.0",
        "info": {"title": TITLE, "version": version},
        "paths": paths,
        "components": {"schemas": components,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
    }  # fmt: skip


_ERROR_SCHEMA = {
    "type": "object",
    "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
        "code": {"type": "string"}, "message": {"type": "string"},
        "problems": {"type": "array", "items": {"type": "object"}}, "error_id": {"type": "string"}}}},
}  # fmt: skip
