"""One error shape for every StreamForge HTTP API: {"error": {"code", "message", "problems"?}}."""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from streamforge.engine.json_input import JsonRefused, parse_json
from streamforge.engine.problems import FlowInvalid, Problem, pointer_of
from streamforge.runtime.http_guard import log_unexpected, unexpected_body

Model = TypeVar("Model", bound=BaseModel)
THREADED_JSON_BYTES = 64 * 1024  # above this, parsing takes long enough to be worth a thread hop


class ApiError(Exception):
    """A refused request: HTTP status, a stable machine-readable code, and what to do in words."""

    def __init__(self, status: int, code: str, message: str, problems: list[Problem] | None = None,
                 headers: dict[str, str] | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.status, self.code, self.message, self.problems = status, code, message, problems
        self.headers = headers or {}  # e.g. Retry-After on a 429

    def to_dict(self) -> dict[str, Any]:
        """The error as relayed between processes (gateway -> control plane), `status` included."""
        body: dict[str, Any] = {"status": self.status, "code": self.code, "message": self.message}
        if self.problems is not None:
            body["problems"] = [problem.to_dict() for problem in self.problems]
        return body

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> ApiError:
        problems = body.get("problems")
        return cls(int(body.get("status", 502)), str(body.get("code", "gateway_error")),
                   str(body.get("message", "the gateway refused the request")),
                   [Problem(**p) for p in problems] if isinstance(problems, list) else None)  # fmt: skip


def error_response(status: int, code: str, message: str, problems: list[Problem] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if problems is not None:
        body["problems"] = [problem.to_dict() for problem in problems]
    return JSONResponse({"error": body}, status_code=status)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    response = error_response(exc.status, exc.code, exc.message, exc.problems)
    response.headers.update(exc.headers)
    return response


async def _flow_invalid(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FlowInvalid)
    return error_response(422, "invalid_flow", f"{exc.total} problem(s) in the flow", exc.problems)


async def unexpected_error(request: Request, exc: Exception) -> Response:
    """The last resort (Starlette answers with it, then re-raises to runtime/http_guard.ErrorShield, which keeps it
    from the server's traceback logging): one log line, a 500 naming the error id. No input should get here."""
    error_id = log_unexpected(exc, request.method, request.url.path)
    return JSONResponse(unexpected_body(error_id), status_code=500)


EXCEPTION_HANDLERS = {ApiError: _api_error, FlowInvalid: _flow_invalid, Exception: unexpected_error}


async def json_body(request: Request) -> Any:
    """The request's body as strict JSON (runtime/limits.py has already bounded its size), or 400 saying what is
    wrong with it: the one reader of every route's JSON. A large body is read in a thread: its numbers' checks and
    the depth walk are Python, so the event loop goes on answering between them (a 50,000-node flow held it
    ~300 ms)."""
    raw = await request.body()
    try:
        return parse_json(raw) if len(raw) <= THREADED_JSON_BYTES else await asyncio.to_thread(parse_json, raw)
    except JsonRefused as refused:
        raise ApiError(400, "bad_request", f"the request body: {refused}") from None


async def json_object(request: Request, example: str) -> dict[str, Any]:
    """The body as a JSON object, or 400 with an example of what to send."""
    body = await json_body(request)
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", f"the body must be a JSON object, not {type(body).__name__}: send {example}")
    return body


def validated(model: type[Model], body: Any, what: str) -> Model:
    """`body` as `model`, or 422 with every problem located by its JSON pointer."""
    try:
        return model.model_validate(body)
    except ValidationError as invalid:
        problems = [Problem("invalid", error["msg"], pointer_of(*error["loc"])) for error in invalid.errors()[:50]]
        raise ApiError(422, "invalid", f"{what}: {len(problems)} problem(s): "
                       + "; ".join(str(p) for p in problems[:5]), problems) from None  # fmt: skip


async def typed_body(request: Request, model: type[Model], what: str) -> Model:
    """The request's JSON object body as `model` (400 if not a JSON object, 422 with located problems if not that
    model)."""
    body = await json_body(request)
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", f"{what} is a JSON object, not {type(body).__name__}")
    return validated(model, body, what)


def whole_number(raw: str | None, name: str, example: str) -> int | None:
    """A query parameter that must be a whole number (None when absent), or 400 saying so."""
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ApiError(400, "bad_request", f"{name} must be a whole number, e.g. {example}; got {raw[:40]!r}") from None
