"""What every HTTP route shares: problem+json errors (RFC 9457) with stable codes, strict bodies."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

PROBLEM = "application/problem+json"
MAX_BODY_BYTES = 64 * 1024
PLAYER_ID_PATTERN = r"^[A-Za-z0-9_.:@-]{1,64}$"
MATCH_ID_PATTERN = r"^[0-7][0-9a-z]{25}$"


class Problem(BaseModel):
    type: str = "about:blank"
    title: str
    status: int
    detail: str
    code: str


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # no coercion: `true` is not a number of seconds


def problem(status: int, code: str, detail: str, title: str | None = None,
            headers: Mapping[str, str] | None = None) -> JSONResponse:
    body = Problem(title=title or code.replace("_", " "), status=status, detail=detail, code=code)
    return JSONResponse(body.model_dump(), status_code=status, media_type=PROBLEM, headers=headers)


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str):
        self.status, self.code, self.detail = status, code, detail
