"""Errors in OpenAI's shape (``{"error": {...}}``) so clients surface the message as-is."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from backend.services.registry import TransitionError


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.headers = headers
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code

    def body(self) -> dict[str, object]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def _describe(exc: RequestValidationError) -> tuple[str, str | None]:
    """One readable line per problem: ``field.path: what is wrong``."""
    lines = []
    first_param = None
    for error in exc.errors()[:5]:
        location = [str(part) for part in error.get("loc", ()) if part != "body"]
        param = ".".join(location) or None
        first_param = first_param or param
        lines.append(f"{param}: {error.get('msg')}" if param else str(error.get("msg")))
    return "; ".join(lines) or "invalid request", first_param


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(TransitionError)
    async def _transition_error(_request: Request, exc: TransitionError) -> JSONResponse:
        """A lifecycle action the version's status does not allow, wherever a route asked for it."""
        type_ = "conflict_error" if exc.status == 409 else "invalid_request_error"
        return JSONResponse(APIError(exc.status, str(exc), type_=type_).body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _describe(exc)
        return JSONResponse(APIError(400, message, param=param).body(), status_code=400)
