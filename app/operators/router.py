"""The operator plane's HTTP routes beside ``/graphql``:

- ``GET /v1/operator/usage.csv?from=&to=`` (an operator key): ``organizationsUsage`` for every
  organization with uses, as CSV, for a billing system;
- ``POST /dashboard/link`` (``{"token": "khl_…"}``): spends a dashboard sign-in link for a
  dashboard credential; the page at ``/dashboard/link/<token>`` sends it.

Errors have the data plane's shape, ``{"code", "message", "hint"}``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, StrictStr, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.auth.presentation import from_request
from app.keys.router import DataPlaneRoute, request_error
from app.kit.db import outages_as_unavailable, session_scope
from app.kit.errors import BadUserInput
from app.kit.query_string import InvalidParameters, moment, parameters
from app.operators import links, usage
from app.operators.authentication import PlatformAuthenticator, Refused
from app.organizations.operator import find_organizations
from app.runtime import Runtime

USAGE_PATH = "/v1/operator/usage.csv"
COLUMNS = ("organization_id", "external_id", "name", "requests", "valid", "rejected")
_PARAMETERS = ("from", "to")
# A link's body holds one token.
LINK_BODY_BYTES = 1024
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def platform_authenticator(runtime: Runtime) -> PlatformAuthenticator:
    settings = runtime.settings
    return PlatformAuthenticator(
        key_prefix=settings.key_prefix,
        sessionmaker=runtime.sessionmaker,
        limiter=runtime.limiter,
        catalogue=runtime.catalogue,
        default_requests=settings.default_rate_limit_requests,
        default_per_seconds=settings.default_rate_limit_per_seconds,
    )


def _cell(value: str | None) -> str:
    """Text a spreadsheet shows as text: an organization's name comes from a signup form, and
    a cell starting with '=' would be run as a formula where the file is opened."""
    if value is None:
        return ""
    return f"'{value}" if value.startswith(_FORMULA_STARTS) else value


def as_csv(rows: Sequence[Sequence[object]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")  # RFC 4180
    writer.writerow(COLUMNS)
    writer.writerows(rows)
    return out.getvalue().encode()


def _refusal(refused: Refused) -> Response:
    rejection = refused.rejection
    status = rejection.outcome.http_status
    headers = {} if refused.ratelimit is None else refused.ratelimit.headers()
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="keyhouse"'
    body = {"code": rejection.outcome.value, "message": rejection.message, "hint": rejection.hint}
    return JSONResponse(body, status, headers)


def _not_an_operator() -> Response:
    return JSONResponse(
        {
            "code": "FORBIDDEN",
            "message": "This endpoint is for the platform's operator: it needs an operator key.",
            "hint": "Operator keys start with the operator prefix (kho_…) and are made with "
            "`keyhouse operator-keys create` on the server.",
            "requiredScope": "operator",
        },
        status_code=403,
    )


def operator_routes(runtime: Runtime) -> list[Route]:
    authenticator = platform_authenticator(runtime)
    operator_prefix = authenticator.operator_prefix

    async def usage_csv(request: Request) -> Response:
        presentation = from_request(request.headers.raw, request.url.query, request.url.path)
        if presentation.values and authenticator.prefix_of(presentation) != operator_prefix:
            # An organization's key, a dashboard sign-in (or anything else): not for this.
            return _not_an_operator()
        answer = await authenticator.authenticate(presentation, operator_prefix)
        if isinstance(answer, Refused):
            return _refusal(answer)
        try:
            found = parameters(request.url.query, _PARAMETERS, _PARAMETERS)
            period = usage.checked_period(
                runtime.settings, moment("from", found["from"]), moment("to", found["to"])
            )
        except InvalidParameters as error:
            return request_error(422, str(error), f"For example: {USAGE_PATH}?from=…&to=…")
        except BadUserInput as error:
            return request_error(422, error.message)
        async with runtime.sessionmaker() as session:
            with outages_as_unavailable():
                rows = await usage.usage_by_organization(session, period, first=None)
                organizations = await find_organizations(
                    session, [row.organization_id for row in rows]
                )
        lines = []
        for row in rows:
            organization = organizations.get(row.organization_id)
            counts = row.counts
            lines.append(
                (
                    row.organization_id,
                    _cell(None if organization is None else organization.external_id),
                    _cell(None if organization is None else organization.name),
                    counts.requests,
                    counts.valid,
                    counts.rejected,
                )
            )
        headers = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
        headers.update(answer.ratelimit.headers())
        return Response(as_csv(lines), media_type="text/csv; charset=utf-8", headers=headers)

    async def use_link(request: Request) -> Response:
        body_bytes = await _small_body(request)
        if body_bytes is None:
            return request_error(413, f"The body is larger than {LINK_BODY_BYTES} bytes.")
        try:
            body = LinkUse.model_validate_json(body_bytes)
        except ValidationError:
            return request_error(400, 'The body is JSON: {"token": "…"}.')
        async with session_scope(runtime.sessionmaker) as session:
            with outages_as_unavailable():
                result = await links.use_link(
                    session,
                    body.token.strip(),
                    key_prefix=runtime.settings.key_prefix,
                    sign_in_hours=runtime.settings.dashboard_sign_in_hours,
                )
        if isinstance(result, links.LinkRefusal):
            return JSONResponse(
                {"code": result.code, "message": result.message, "hint": result.hint},
                status_code=result.status,
            )
        credential = result.credential
        return JSONResponse(
            {
                "credential": result.secret,
                "organizationId": credential.organization_id,
                "expiresAt": credential.expires_at.isoformat(),
            },
            headers={"Cache-Control": "no-store"},
        )

    return [
        Route(USAGE_PATH, DataPlaneRoute(frozenset({"GET"}), usage_csv)),
        Route(links.LINK_PATH, DataPlaneRoute(frozenset({"POST"}), use_link)),
    ]


async def _small_body(request: Request) -> bytes | None:
    """The body, or None once it grows past LINK_BODY_BYTES (the rest is never read)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > LINK_BODY_BYTES:
            return None
    return body


class LinkUse(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    token: StrictStr
