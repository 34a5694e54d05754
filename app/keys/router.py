"""The data plane: ``POST /v1/keys/verify`` for services, ``GET /v1/auth`` for gateways.

These sit on the provider's hot path, so they are plain Starlette endpoints calling the verifier
directly, dispatched by path before FastAPI's middleware stack and router (see
:class:`DataPlaneRoute`): FastAPI's layers would cost more than the verification itself
(benchmarks/verify.py measures both).
"""

from __future__ import annotations

import functools
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from app.auth.network import IPAddress, client_address, parse_address
from app.auth.outcomes import Outcome
from app.auth.presentation import Presentation, from_forward_auth
from app.keys.credits import COST_MAX
from app.keys.verification import KeyVerifier, Verification
from app.kit.boundary import excerpt, value_problem
from app.kit.errors import Unavailable
from app.kit.labels import operation_label, request_label
from app.runtime import Runtime

logger = logging.getLogger(__name__)

MAX_SCOPES = 20
# A verify body holds a key, at most 20 scope names and an operation label: a few KiB at most.
MAX_BODY_BYTES = 16 * 1024
MAX_OPERATION_LENGTH = 200
MAX_SCOPE_NAME_LENGTH = 100
# The longest spelling of an address: IPv6 with an IPv4 tail, a zone, brackets and a port.
MAX_IP_LENGTH = 64
SERVICE_TOKEN_HEADER = "x-keyhouse-service-token"  # noqa: S105 - a header name
# The gateway's name for the operation a forward-auth request is for (see deploy/nginx).
OPERATION_HEADER = "x-keyhouse-operation"


class VerifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key: StrictStr
    scopes: list[StrictStr] = Field(default_factory=list, max_length=MAX_SCOPES)
    operation: StrictStr | None = Field(default=None, max_length=MAX_OPERATION_LENGTH)
    # The address the service's own caller came from, for keys with an IP allowlist.
    ip: StrictStr | None = Field(default=None, max_length=MAX_IP_LENGTH)
    # Credits this use spends (keys with credits); 0 checks without spending.
    cost: StrictInt = Field(default=1, ge=0, le=COST_MAX)


class DataPlaneResponse(Response):
    """An answer built for the hot path: the headers encoded directly, without the scans of
    Starlette's general ``init_headers`` (0.3 to 1 µs less per answer, measured)."""

    def __init__(
        self,
        body: bytes,
        headers: Mapping[str, str],
        *,
        status_code: int = 200,
        media_type: str | None = "application/json",
    ) -> None:
        self.status_code = status_code
        self.background = None
        self.body = body
        raw = [(b"content-length", str(len(body)).encode())]
        if media_type is not None:
            raw.append((b"content-type", media_type.encode()))
        raw.extend(
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in headers.items()
        )
        self.raw_headers = raw


def _timestamp(value: Any) -> str | None:
    return None if value is None else value.isoformat()


# What a refused key's answer says in the identity fields: nothing.
_NO_IDENTITY: dict[str, Any] = {
    "keyId": None,
    "organizationId": None,
    "scopes": None,
    "expiresAt": None,
    "expiresSoon": False,
    "deprecated": False,
    "sunset": None,
    "replacedBy": None,
    "meta": None,
}


def verification_body(verification: Verification) -> dict[str, Any]:
    """The verify endpoint's answer; identity fields only for a valid key."""
    ratelimit = verification.ratelimit
    limit = (
        None
        if ratelimit is None
        else {"limit": ratelimit.limit, "remaining": ratelimit.remaining, "reset": ratelimit.reset}
    )
    key = verification.key
    spend = verification.credits
    # What is left is the key holder's to know, also when it is what refused the request.
    credits = (
        None
        if spend is None
        else {"remaining": spend.remaining, "refillAt": _timestamp(spend.refill_at)}
    )
    if key is None or not verification.valid:
        return {
            "valid": False,
            "code": verification.outcome.value,
            "message": verification.message,
            "hint": verification.hint or None,
            **_NO_IDENTITY,
            "ratelimit": limit,
            "credits": credits,
        }
    sunset = verification.sunset
    replaced_by = key.replaced_by
    return {
        "valid": True,
        "code": verification.outcome.value,
        "message": verification.message,
        "hint": verification.hint or None,
        "keyId": key.id,
        "organizationId": key.organization_id,
        "scopes": key.sorted_scopes,
        "expiresAt": _timestamp(key.expires_at),
        "expiresSoon": verification.expires_soon,
        # A replaced key in its grace period still works, but its integration should move on.
        "deprecated": sunset is not None,
        "sunset": _timestamp(sunset),
        "replacedBy": None
        if replaced_by is None
        else {"name": replaced_by.name, "hint": replaced_by.hint},
        "ratelimit": limit,
        "meta": key.meta,
        "credits": credits,
    }


def verification_headers(verification: Verification) -> dict[str, str]:
    """Rate-limit status (or when to retry an outage), plus deprecation and expiry notices for a
    valid key."""
    headers = verification.status_headers()
    headers.update(verification.notice_headers())
    return headers


# Every refusal of the data plane has one shape, {"code", "message", "hint"}, as a refused key
# has: a request the endpoint cannot read says so by its status.
_REQUEST_ERROR_CODES = {400: "BAD_REQUEST", 413: "PAYLOAD_TOO_LARGE", 422: "INVALID_INPUT"}


def refusal_body(verification: Verification) -> dict[str, str | None]:
    """A refused key's answer, the one shape of every data-plane refusal."""
    return {
        "code": verification.outcome.value,
        "message": verification.message,
        "hint": verification.hint or None,
    }


def request_error(status: int, message: str, hint: str | None = None) -> JSONResponse:
    body = {"code": _REQUEST_ERROR_CODES[status], "message": message, "hint": hint}
    return JSONResponse(body, status_code=status)


def _service_token_refusal(runtime: Runtime, headers: Mapping[str, str]) -> Response | None:
    expected = runtime.settings.service_token
    if expected is None:
        return None
    presented = headers.get(SERVICE_TOKEN_HEADER, "")
    if hmac.compare_digest(presented.encode(), expected.encode()):
        return None
    return JSONResponse(
        {
            "code": "SERVICE_TOKEN_REQUIRED",
            "message": "This endpoint needs the service token.",
            "hint": f"Send it in {SERVICE_TOKEN_HEADER} (the deployment's KEYHOUSE_SERVICE_TOKEN).",
        },
        status_code=401,
        headers={"WWW-Authenticate": 'KeyhouseServiceToken realm="keyhouse"'},
    )


def _scope_problem(scopes: Iterable[str]) -> str | None:
    """Why a required scope name cannot be looked up (it holds a NUL, a control character...,
    or is too long), quoting a short excerpt of it; None when every name can."""
    for index, scope in enumerate(scopes):
        problem = value_problem(scope, max_length=MAX_SCOPE_NAME_LENGTH)
        if problem is not None:
            return f"scopes.{index} {problem}: {excerpt(scope)!r}"
    return None


def _forward_auth_label(headers: Mapping[str, str], url_path: str | None) -> str:
    """What a forward-auth use is counted under: the gateway's name for the operation when it
    gives one, else the original method and path with its identifiers replaced."""
    named = headers.get(OPERATION_HEADER, "").strip()
    if named:
        # Header values arrive as Latin-1; a gateway sends a non-ASCII name as UTF-8.
        return operation_label(named.encode("latin-1").decode("utf-8", "replace"))
    method = headers.get("x-original-method") or headers.get("x-forwarded-method") or "GET"
    # The label never includes the query string: that is where keys travel.
    return request_label(method, url_path or "/")


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    return f"{where}: {first['msg']}"


Endpoint = Callable[[Request], Awaitable[Response]]


class DataPlaneRoute:
    """One data-plane path as a bare ASGI app: method check, the endpoint, a JSON 503 if the
    endpoint meets a database outage, and a JSON 500 that shows nothing of the failure if it
    raises anything else (the log has it, without the request).

    The application calls these before FastAPI's middleware stack (app/main.py): on a cached key
    that stack and Starlette's routing cost more than the verification itself.
    """

    def __init__(self, methods: frozenset[str], endpoint: Endpoint) -> None:
        self.methods = methods
        self.endpoint = endpoint
        self._allow = ", ".join(sorted(methods))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in self.methods:
            response: Response = JSONResponse(
                {"code": "METHOD_NOT_ALLOWED", "message": f"Use {self._allow}.", "hint": None},
                status_code=405,
                headers={"Allow": self._allow},
            )
        else:
            try:
                response = await self.endpoint(Request(scope, receive))
            except Unavailable as outage:
                logger.warning("data plane at %s: %r", scope["path"], outage.__cause__)
                response = unavailable_response(outage)
            except Exception:
                logger.exception("data plane error at %s", scope["path"])
                response = JSONResponse(
                    {
                        "code": "INTERNAL",
                        "message": "Internal error; the service logged it.",
                        "hint": None,
                    },
                    status_code=500,
                )
        await response(scope, receive, send)


def unavailable_response(outage: Unavailable) -> Response:
    """An outage met outside verification (which answers with its own body): the same code."""
    return JSONResponse(
        {"code": outage.code, "message": outage.message, "hint": "Retry in a few seconds."},
        status_code=503,
        headers={"Retry-After": str(outage.retry_after_seconds)},
    )


async def _bounded_body(request: Request) -> bytes | None:
    """The request body, or None once it grows past MAX_BODY_BYTES."""
    body = b""
    while True:
        message = await request.receive()
        if message["type"] != "http.request":
            return None  # the client went away
        chunk: bytes = message.get("body", b"")
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return None
        if not message.get("more_body", False):
            return body


def data_plane_routes(runtime: Runtime) -> dict[str, DataPlaneRoute]:
    """The data-plane paths and what answers them."""
    verifier: KeyVerifier = runtime.verifier
    trusted_proxies = runtime.settings.trusted_proxy_networks

    async def verify_key(request: Request) -> Response:
        refusal = _service_token_refusal(runtime, request.headers)
        if refusal is not None:
            return refusal
        body = await _bounded_body(request)
        if body is None:
            return request_error(413, f"The body is larger than {MAX_BODY_BYTES} bytes.")
        try:
            payload = VerifyRequest.model_validate_json(body)
        except ValidationError as error:
            if any(e["type"] == "json_invalid" for e in error.errors()):
                return request_error(400, "The body is not valid JSON.")
            return request_error(422, f"Invalid verify request: {_describe(error)}")
        problem = _scope_problem(payload.scopes)
        if problem is not None:
            return request_error(422, f"Invalid verify request: {problem}")
        client: IPAddress | None = None
        if payload.ip is not None:
            client = parse_address(payload.ip)
            if client is None:
                return request_error(
                    422,
                    f"Invalid verify request: ip is not an IPv4 or IPv6 address: "
                    f"{excerpt(payload.ip)!r}",
                )
        verification = await verifier.verify(
            Presentation.of(payload.key),
            required_scopes=payload.scopes,
            operation=operation_label(payload.operation) if payload.operation else "verify",
            client=client,
            cost=payload.cost,
        )
        return verify_response(verification)

    async def forward_auth(request: Request) -> Response:
        # Read once into a dict: this endpoint looks up to six headers by name. The key headers
        # are read from the raw list, where a repeated one keeps all of its values.
        raw_headers = request.scope["headers"]
        headers = _header_values(raw_headers)
        refusal = _service_token_refusal(runtime, headers)
        if refusal is not None:
            return refusal
        auth_query = _auth_query(request.scope["query_string"])
        required = _required_scopes(auth_query, headers.get("x-required-scopes"))
        if len(required) > MAX_SCOPES:
            return request_error(400, f"At most {MAX_SCOPES} required scopes.")
        problem = _scope_problem(required)
        if problem is not None:
            return request_error(400, f"Invalid required scope: {problem}")
        presentation = from_forward_auth(raw_headers, headers)
        operation = _forward_auth_label(headers, presentation.url_path)
        peer = request.scope.get("client")
        verification = await verifier.verify(
            presentation,
            required_scopes=required,
            operation=operation,
            client=client_address(peer[0] if peer else None, headers, trusted_proxies),
            cost=1,
        )
        return forward_auth_response(
            verification,
            rate_limit_as_403=auth_query.rate_limit_as_403,
            with_meta=auth_query.meta,
        )

    return {
        "/v1/keys/verify": DataPlaneRoute(frozenset({"POST"}), verify_key),
        "/v1/auth": DataPlaneRoute(frozenset({"GET", "HEAD"}), forward_auth),
    }


def _header_values(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """Request headers by lower-case name; of a repeated header, the first (as Starlette)."""
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in reversed(raw)}


class AuthQuery(NamedTuple):
    """What the auth URL's own query says (not the original request's)."""

    scopes: frozenset[str]
    rate_limit_as_403: bool
    # ?meta=1: pass the key's metadata on in X-Api-Key-Meta.
    meta: bool


@functools.lru_cache(maxsize=256)
def _auth_query(query_string: bytes) -> AuthQuery:
    """``scope=`` (repeated, or comma/space separated) and ``ratelimit_status=403``. The auth
    URL is part of the gateway's configuration, one per protected location, so there are a
    handful of distinct values: each is parsed once."""
    params = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    return AuthQuery(
        scopes=frozenset(_scope_names(value for name, value in params if name == "scope")),
        rate_limit_as_403=("ratelimit_status", "403") in params,
        meta=("meta", "1") in params,
    )


def _scope_names(values: Iterable[str]) -> Iterator[str]:
    for value in values:
        yield from value.replace(",", " ").split()


def _required_scopes(query: AuthQuery, header: str | None) -> list[str]:
    """The auth URL's scopes and those of ``X-Required-Scopes``."""
    if not header:
        return sorted(query.scopes)
    return sorted(query.scopes.union(_scope_names([header])))


def verify_response(verification: Verification) -> Response:
    """HTTP 200 for every answer about the key, valid or not; 503 when it could not be checked."""
    status = 503 if verification.outcome is Outcome.UNAVAILABLE else 200
    # orjson: a quarter of pydantic-core's time on this body.
    return DataPlaneResponse(
        orjson.dumps(verification_body(verification)),
        verification_headers(verification),
        status_code=status,
    )


def forward_auth_response(
    verification: Verification, *, rate_limit_as_403: bool, with_meta: bool = False
) -> Response:
    headers = verification_headers(verification)
    if verification.valid and verification.key is not None:
        key = verification.key
        headers.update(
            {
                "X-Api-Key-Id": key.id,
                "X-Organization-Id": key.organization_id,
                "X-Api-Key-Scopes": " ".join(key.sorted_scopes),
            }
        )
        if with_meta and key.meta_header is not None:
            headers["X-Api-Key-Meta"] = key.meta_header
        if verification.credits is not None:
            headers["X-Api-Key-Credits-Remaining"] = str(verification.credits.remaining)
        return DataPlaneResponse(b"", headers, media_type=None)

    outcome = verification.outcome
    body = refusal_body(verification)
    encoded = json.dumps(body, ensure_ascii=True, separators=(",", ":"))
    # nginx drops an auth subrequest's body; this header carries it (ASCII, one line) so the
    # gateway can answer with it. See the README's nginx example.
    headers["X-Keyhouse-Error"] = encoded
    headers["X-Keyhouse-Code"] = outcome.value
    status = outcome.http_status
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="keyhouse"'
    if outcome is Outcome.RATE_LIMITED and rate_limit_as_403:
        # nginx's auth_request passes only 401 and 403 through (anything else becomes a 500);
        # the example config turns this 403 back into a 429 with Retry-After.
        status = 403
    return DataPlaneResponse(encoded.encode(), headers, status_code=status)
