"""``POST /v1/keys/leaked``: where a secret scanner reports keys it found in public, in GitHub's
secret scanning partner format (a JSON array of ``{token, type, url, source}``), answered per
token with ``{token_raw, token_type, label}``.

A report whose signature does not check out is refused (401) before its body is parsed, and
changes nothing.
"""

from __future__ import annotations

import logging

from pydantic import BaseModel, ConfigDict, Field, StrictStr, TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.keys.router import DataPlaneRoute, request_error
from app.kit.db import outages_as_unavailable, session_scope
from app.leaks.service import TOKEN_TYPE, Label, Report, handle_report
from app.leaks.signature import parse_public_keys, signed_by_a_reporter
from app.metrics import LEAK_REPORTS
from app.runtime import Runtime

logger = logging.getLogger(__name__)

PATH = "/v1/keys/leaked"
# GitHub sends a few tokens per report; this bounds what one request can make keyhouse do.
MAX_TOKENS = 1000
MAX_BODY_BYTES = 1024 * 1024


class ReportedToken(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    token: StrictStr
    type: StrictStr | None = None
    url: StrictStr | None = None
    source: StrictStr | None = None


_REPORT = TypeAdapter(list[ReportedToken])


class _Limits(BaseModel):
    tokens: list[ReportedToken] = Field(max_length=MAX_TOKENS)


async def _bounded_body(request: Request) -> bytes | None:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return None
    return body


def _unsigned() -> Response:
    return JSONResponse(
        {
            "code": "UNAUTHORIZED",
            "message": "The report's signature does not check out.",
            "hint": "Sign the raw body with ECDSA (SHA-256) under a key listed in "
            "KEYHOUSE_LEAK_REPORT_PUBLIC_KEYS, named in GITHUB-PUBLIC-KEY-IDENTIFIER, the "
            "signature base64 in GITHUB-PUBLIC-KEY-SIGNATURE.",
        },
        status_code=401,
    )


def leak_report_route(runtime: Runtime) -> Route | None:
    """The route, when the deployment lists reporters' keys; None (404) when it does not."""
    document = runtime.settings.leak_report_public_keys
    if document is None:
        return None
    keys = parse_public_keys(document)
    prefix = runtime.settings.key_prefix

    async def report_leaks(request: Request) -> Response:
        body = await _bounded_body(request)
        if body is None:
            return request_error(413, f"The body is larger than {MAX_BODY_BYTES} bytes.")
        if not signed_by_a_reporter(body, request.headers, keys):
            logger.warning("leak report refused: the signature does not check out")
            return _unsigned()
        try:
            reported = _Limits(tokens=_REPORT.validate_json(body)).tokens
        except ValidationError as error:
            if any(e["type"] == "json_invalid" for e in error.errors()):
                return request_error(400, "The body is not valid JSON.")
            return request_error(
                422,
                f"A report is a JSON array of at most {MAX_TOKENS} {{token, type, url, "
                "source}} objects.",
            )
        answers = []
        with outages_as_unavailable():
            async with session_scope(runtime.sessionmaker) as session:
                for item in reported:
                    report = Report(item.token, item.url or "", item.source or "")
                    label = await handle_report(
                        session, report, key_prefix=prefix, broadcast=runtime.broadcast
                    )
                    answers.append(
                        {"token_raw": item.token, "token_type": TOKEN_TYPE, "label": label.value}
                    )
        for answer in answers:
            LEAK_REPORTS.labels(answer["label"]).inc()
        found = sum(answer["label"] == Label.TRUE_POSITIVE for answer in answers)
        logger.info("leak report: %d token(s), %d of them our keys", len(answers), found)
        return JSONResponse(answers)

    return Route(PATH, DataPlaneRoute(frozenset({"POST"}), report_leaks))
