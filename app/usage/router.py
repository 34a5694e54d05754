"""``GET /v1/usage.csv``: the ``usage`` query's series and breakdowns as one CSV table, for
analysts' tools (pandas, DuckDB, a spreadsheet).

Authenticated like every request (``X-API-Key``, ``Authorization: Bearer`` or ``key=``) and
needing ``read:analytics``; the range goes through :func:`service.checked_query`, so its limits
and messages are the GraphQL query's. Errors have the data plane's shape,
``{"code", "message", "hint"}``.

One row per figure, its ``kind`` saying which table it belongs to (a long format: one
``read_csv`` reads all of it, and a filter on ``kind`` gives each table)::

    kind,start,key,operation,outcome,requests,valid,rejected
    total,,,,,12,10,2
    series,2025-01-01T10:00:00+00:00,,,,12,10,2
    key,,key_01…,,,12,10,2
    operation,,,verify,,12,10,2
    outcome,,,,VALID,10,10,0
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.auth.network import request_client
from app.auth.presentation import from_request
from app.auth.principal import Caller
from app.keys.router import (
    DataPlaneRoute,
    refusal_body,
    request_error,
    verification_headers,
)
from app.keys.scopes import READ_ANALYTICS
from app.kit.boundary import excerpt
from app.kit.db import outages_as_unavailable
from app.kit.errors import BadUserInput
from app.kit.labels import request_label
from app.kit.query_string import InvalidParameters, moment, parameters
from app.models.usage import Counts, Granularity
from app.runtime import Runtime
from app.usage import service

PATH = "/v1/usage.csv"
COLUMNS = ("kind", "start", "key", "operation", "outcome", "requests", "valid", "rejected")
# Every breakdown at its largest: a file for analysis has room for all of it.
BREAKDOWN_ROWS = service.MAX_BREAKDOWN
_PARAMETERS = ("from", "to", "granularity", "apiKeyId")
_REQUIRED = ("from", "to", "granularity")


def _granularity(value: str) -> Granularity:
    try:
        return Granularity[value.upper()]
    except KeyError:
        names = ", ".join(member.name for member in Granularity)
        raise InvalidParameters(
            f"'granularity' is one of {names}, not {excerpt(value)!r}."
        ) from None


def usage_query(runtime: Runtime, query_string: str) -> service.UsageQuery:
    """The checked query the parameters ask for (InvalidParameters or BadUserInput)."""
    found = parameters(query_string, _PARAMETERS, _REQUIRED)
    return service.checked_query(
        runtime.settings,
        moment("from", found["from"]),
        moment("to", found["to"]),
        _granularity(found["granularity"]),
        api_key_id=found.get("apiKeyId") or None,
    )


def _counts(counts: Counts) -> tuple[int, int, int]:
    return counts.requests, counts.valid, counts.rejected


def _shares(
    kind: str, column: int, shares: Sequence[service.Share]
) -> Iterator[tuple[object, ...]]:
    for share in shares:
        labels: list[object] = ["", "", "", ""]
        labels[column] = share.label
        yield (kind, *labels, *_counts(share.counts))


async def usage_rows(
    runtime: Runtime, caller: Caller, query: service.UsageQuery
) -> list[tuple[object, ...]]:
    """Every row of the file, in the order of the module's example."""
    async with runtime.sessionmaker() as session:
        with outages_as_unavailable():
            totals = await service.totals(session, caller, query)
            points = await service.series(session, caller, query)
            keys = await service.by_key(session, caller, query, first=BREAKDOWN_ROWS)
            operations = await service.by_operation(session, caller, query, first=BREAKDOWN_ROWS)
            outcomes = await service.by_outcome(session, caller, query)
    rows: list[tuple[object, ...]] = [("total", "", "", "", "", *_counts(totals))]
    rows.extend(
        ("series", point.start.isoformat(), "", "", "", *_counts(point.counts)) for point in points
    )
    rows.extend(_shares("key", 1, keys))
    rows.extend(_shares("operation", 2, operations))
    rows.extend(_shares("outcome", 3, outcomes))
    return rows


def as_csv(rows: Sequence[Sequence[object]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")  # RFC 4180
    writer.writerow(COLUMNS)
    writer.writerows(rows)
    return out.getvalue().encode()


def usage_csv_route(runtime: Runtime) -> Route:
    """The route, answered like the data plane's: JSON errors, 503 for an outage, never a bare
    500 page."""

    async def usage_csv(request: Request) -> Response:
        verification = await runtime.verifier.verify(
            from_request(request.headers.raw, request.url.query, request.url.path),
            required_scopes=(READ_ANALYTICS,),
            operation=request_label(request.method, PATH),
            client=request_client(
                request.scope.get("client"),
                request.headers,
                runtime.settings.trusted_proxy_networks,
            ),
        )
        headers = verification_headers(verification)
        key = verification.key
        if not verification.valid or key is None:
            if verification.outcome.http_status == 401:
                headers["WWW-Authenticate"] = 'Bearer realm="keyhouse"'
            status = verification.outcome.http_status
            return JSONResponse(refusal_body(verification), status, headers)
        try:
            query = usage_query(runtime, request.url.query)
        except InvalidParameters as error:
            return request_error(
                422, str(error), f"For example: {PATH}?from=…&to=…&granularity=HOUR"
            )
        except BadUserInput as error:
            return request_error(422, error.message)
        rows = await usage_rows(runtime, key.caller(), query)
        # The figures are the organization's: no shared cache may keep them.
        headers.update({"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})
        return Response(as_csv(rows), media_type="text/csv; charset=utf-8", headers=headers)

    return Route(PATH, DataPlaneRoute(frozenset({"GET"}), usage_csv))
