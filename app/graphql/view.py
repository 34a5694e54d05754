"""The GraphQL HTTP view at ``/graphql``: authentication, one transaction per request, body
limits, and answers in the media type asked for.

Every request authenticates with an organization's key through the same verification function
as the data plane (so it spends the key's rate-limit budget and counts as a use). The GraphiQL
page itself loads without a key: it is keyhouse's own page (app/dashboard/static/graphiql.html),
whose assets keyhouse serves, and it reads the schema from ``GET /graphql/schema.json``.
"""

from __future__ import annotations

import functools
import logging
import re
from pathlib import Path
from typing import Any, cast

import orjson
from cross_web import HTTPException
from graphql import OperationDefinitionNode, parse
from pydantic_core import to_jsonable_python
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types import ExecutionResult

from app.auth.network import request_client
from app.auth.outcomes import Outcome
from app.auth.presentation import Presentation, from_request
from app.dashboard.routes import graphiql_page
from app.graphql.context import Context
from app.graphql.request_body import BodyTooLarge, check_declared_length, within
from app.graphql.schema import UNDONE_CODES, KeyhouseSchema, error_code
from app.keys.verification import Verification
from app.kit.boundary import EXCERPT_LENGTH, REPLACEMENT, excerpt
from app.kit.errors import Unavailable
from app.metrics import GRAPHQL_OPERATIONS
from app.operators.authentication import Refused
from app.operators.router import platform_authenticator
from app.runtime import Runtime
from app.usage.loaders import usage_of_key

logger = logging.getLogger(__name__)

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
# The usage label of a GraphQL request that never ran an operation: refused by authentication,
# parsing, validation, the boundary or its cost. Hostile documents cannot mint labels this way.
UNRESOLVED_OPERATION = "graphql"


class RequestRefused(Exception):
    """Authentication failed: answered before any GraphQL runs."""

    def __init__(self, verification: Verification) -> None:
        self.verification = verification


class MutationViaGet(Exception):
    """A mutation sent with GET: GraphQL over HTTP answers 405 with ``Allow: POST`` (Strawberry
    answers 400), and nothing runs."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _refusal_code(outcome: Outcome) -> str:
    if outcome in (Outcome.RATE_LIMITED, Outcome.UNAVAILABLE):
        return outcome.value
    # A known, sound key that may not do this: from here, any more, or while its organization
    # is suspended (HTTP 403).
    if outcome.http_status == 403:
        return "FORBIDDEN"
    return "UNAUTHORIZED"


def refusal_error(verification: Verification) -> tuple[dict[str, Any], dict[str, str]]:
    """The error (message, extensions) and headers of a request whose key was refused."""
    outcome = verification.outcome
    extensions: dict[str, Any] = {"code": _refusal_code(outcome), "reason": outcome.value}
    if verification.hint:
        extensions["hint"] = verification.hint
    # Rate-limited requests and outages carry Retry-After (from the status headers); refused keys
    # a challenge.
    headers = verification.status_headers()
    if outcome.http_status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="keyhouse"'
    return {"message": verification.message, "extensions": extensions}, headers


def _reason(error: HTTPException) -> str:
    """What Strawberry's refusal of a request says, quoting at most an excerpt of the request."""
    cause = error.__cause__
    if isinstance(cause, CannotGetOperationTypeError):
        if cause.operation_name is None:
            return "The document holds several operations, or none: name one in operationName."
        return f"The document has no operation named '{excerpt(cause.operation_name)}'."
    return error.reason


# graphql-core's messages quote the document and variable values ('name', "value") in full.
BOUNDED_MESSAGE = 2 * EXCERPT_LENGTH
_QUOTED_AT_LENGTH = EXCERPT_LENGTH + 1
_LONG_QUOTE = re.compile(f"'([^']{{{_QUOTED_AT_LENGTH},}})'|\"([^\"]{{{_QUOTED_AT_LENGTH},}})\"")


def _with_excerpts(message: str) -> str:
    """The message with every long quotation cut to an excerpt, and at most a few of them."""
    shortened = _LONG_QUOTE.sub(
        lambda quoted: f"'{excerpt(quoted.group(1) or quoted.group(2))}'", message
    )
    return excerpt(shortened, 4 * EXCERPT_LENGTH)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _without_surrogates(value: object) -> object:
    if isinstance(value, str):
        return _SURROGATE.sub(REPLACEMENT, value)
    if isinstance(value, dict):
        return {_without_surrogates(k): _without_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_surrogates(item) for item in value]
    return value


def _wants_graphql_response_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    position = accept.find(GRAPHQL_RESPONSE_JSON)
    if position < 0:
        return False
    plain = accept.find("application/json")
    return plain < 0 or position < plain


def never_executed(result: ExecutionResult) -> bool:
    """Refused before execution (parsing, validation, the boundary, cost): no data, and no
    error that belongs to a field."""
    errors = result.errors or []
    return result.data is None and bool(errors) and all(e.path is None for e in errors)


# The operations named in the metrics: the dashboard's own (app/dashboard/queries, which
# frontend-queries/ links to). Any other name a client sends is 'other', so a hostile client
# cannot grow the series.
FRONTEND_QUERIES = Path(__file__).resolve().parents[1] / "dashboard" / "queries"


@functools.cache
def dashboard_operations() -> frozenset[str]:
    names: set[str] = set()
    for path in sorted(FRONTEND_QUERIES.glob("*.graphql")):
        for definition in parse(path.read_text()).definitions:
            if isinstance(definition, OperationDefinitionNode) and definition.name:
                names.add(definition.name.value)
    return frozenset(names)


def _count_operation(context: Context, result: ExecutionResult | None) -> None:
    operation = context.operation if context.operation in dashboard_operations() else "other"
    if result is None:
        code = "BAD_REQUEST"  # refused by the HTTP layer before any GraphQL ran
    elif result.errors:
        code = error_code(result.errors[0]) or "BAD_USER_INPUT"
    else:
        code = "OK"
    GRAPHQL_OPERATIONS.labels(operation, code).inc()


def _usage_label(context: Context, result: ExecutionResult | None) -> str:
    """A use is counted under the operation's name only if that operation ran."""
    if context.operation is None or result is None or never_executed(result):
        return UNRESOLVED_OPERATION
    return f"{UNRESOLVED_OPERATION}:{context.operation}"


class KeyhouseGraphQL(GraphQL[Context, None]):
    """Strawberry's ASGI view plus authentication, one transaction per request and
    ``application/graphql-response+json``."""

    def __init__(self, schema: KeyhouseSchema, runtime: Runtime) -> None:
        super().__init__(schema, graphql_ide="graphiql", allow_queries_via_get=True)
        self.runtime = runtime
        self.platform = platform_authenticator(runtime)

    async def render_graphql_ide(self, request: Request) -> Response:
        # Strawberry's page loads GraphiQL from a CDN with an inline script: blank offline, and
        # impossible under a strict Content-Security-Policy.
        return graphiql_page(request)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            # No subscriptions: refuse websockets rather than accept unauthenticated sessions.
            await send({"type": "websocket.close", "code": 1008})
            return
        limit = self.runtime.settings.graphql_max_body_bytes
        request = Request(scope, receive=within(receive, limit))
        try:
            check_declared_length(scope, limit)
            response = await self.run(request)
        except RequestRefused as refused:
            outcome = refused.verification.outcome
            logger.info("graphql request refused %s: %s", _refusal_code(outcome), outcome.value)
            error, challenge = refusal_error(refused.verification)
            status = refused.verification.outcome.http_status
            response = self.error_response(request, status, error, challenge)
        except MutationViaGet as refused:
            response = self.request_error(request, 405, refused.reason, headers={"Allow": "POST"})
        except Unavailable as outage:
            # The database went away while the request's work was being committed.
            logger.warning("graphql request unavailable: %r", outage.__cause__)
            failure = {"message": outage.message, "extensions": outage.extensions}
            retry = {"Retry-After": str(outage.retry_after_seconds)}
            response = self.error_response(request, 503, failure, retry)
        except BodyTooLarge as refused:
            message = f"The request body is larger than {refused.limit:,} bytes."
            response = self.request_error(request, 413, message, code="PAYLOAD_TOO_LARGE")
        except HTTPException as refusal:
            allow = {"Allow": "GET, POST"} if refusal.status_code == 405 else None
            response = self.request_error(
                request, refusal.status_code, _reason(refusal), headers=allow
            )
        await response(scope, receive, send)

    def request_error(
        self,
        request: Request,
        status: int,
        message: str,
        *,
        code: str = "BAD_USER_INPUT",
        headers: dict[str, str] | None = None,
    ) -> Response:
        """A request refused before any operation ran, as a GraphQL response: errors, no data."""
        error = {"message": message, "extensions": {"code": code}}
        return self.error_response(request, status, error, headers)

    def error_response(
        self,
        request: Request,
        status: int,
        error: dict[str, Any],
        headers: dict[str, str] | None = None,
    ) -> Response:
        """One error, no ``data`` entry (nothing was executed), in the media type asked for."""
        media_type = (
            GRAPHQL_RESPONSE_JSON if _wants_graphql_response_json(request) else "application/json"
        )
        return Response(self.encode_json({"errors": [error]}), status, headers, media_type)

    def create_response(
        self, response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse], sub_response: Response
    ) -> Response:
        response = super().create_response(response_data, sub_response)
        if isinstance(response_data, dict) and any(
            cast(dict[str, Any], error).get("extensions", {}).get("code") == Unavailable.code
            for error in response_data.get("errors") or ()
        ):
            # Part of the answer is missing because the database did not answer: an outage, so
            # clients and load balancers retry rather than treat it as a result.
            response.status_code = 503
            response.headers["Retry-After"] = str(Unavailable.retry_after_seconds)
        return response

    def encode_json(self, data: object) -> bytes:
        # orjson: a page of 50 keys encodes in 5 µs, a fifth of pydantic-core's time and a
        # fifteenth of the standard library's. What orjson does not know (a set, a Decimal in a
        # JSON scalar) pydantic-core turns into something it does.
        try:
            return orjson.dumps(data, default=to_jsonable_python)
        except TypeError:
            # A lone surrogate (UTF-8 has none) that an error message quoted from the request:
            # the answer says U+FFFD there rather than failing.
            return orjson.dumps(_without_surrogates(to_jsonable_python(data)))

    def parse_json(self, data: str | bytes) -> Any:
        parsed = super().parse_json(data)
        # Strawberry reads a body that is a JSON string or number as if it were an object.
        if not isinstance(parsed, dict | list):
            raise HTTPException(400, "A GraphQL request is a JSON object.")
        return parsed

    async def parse_http_body(self, request: Any) -> GraphQLRequestData | list[GraphQLRequestData]:
        request_data = await super().parse_http_body(request)
        for each in request_data if isinstance(request_data, list) else [request_data]:
            if not isinstance(each.operation_name, str | None):
                raise HTTPException(
                    400, "The GraphQL request's `operationName` must be a string or null."
                )
        return request_data

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        # Websockets never get this far (see __call__).
        assert isinstance(request, Request)
        assert isinstance(response, Response)
        return Context(
            request=request, response=response, runtime=self.runtime, key_usage=usage_of_key
        )

    async def execute_operation(
        self,
        request: Request,
        request_adapter: Any,
        request_data: Any,
        context: Context,
        root_value: None,
        sub_response: Response,
    ) -> ExecutionResult:
        verifier = self.runtime.verifier
        presentation = from_request(request.headers.raw, request.url.query)
        key = None
        platform_prefix = self.platform.prefix_of(presentation)
        if platform_prefix is not None:
            await self._sign_in(presentation, platform_prefix, context, sub_response)
        else:
            verification = await verifier.verify(
                presentation,
                operation=UNRESOLVED_OPERATION,
                defer_valid_use=True,
                # The calling key's allowlist holds here too; keyhouse's own API spends no credits.
                client=request_client(
                    request.scope.get("client"),
                    request.headers,
                    self.runtime.settings.trusted_proxy_networks,
                ),
            )
            key = verification.key
            if not verification.valid or key is None:
                raise RequestRefused(verification)
            context.authenticate(key.caller())
            if verification.ratelimit is not None:
                sub_response.headers.update(verification.ratelimit.headers())
            sub_response.headers.update(verification.notice_headers())
        succeeded = False
        result: ExecutionResult | None = None
        try:
            try:
                answer = await super().execute_operation(
                    request, request_adapter, request_data, context, root_value, sub_response
                )
            except HTTPException as error:
                if request.method == "GET" and isinstance(
                    error.__cause__, InvalidOperationTypeError
                ):
                    raise MutationViaGet(error.reason) from error
                raise
            # Batching and subscriptions are off: the result is one ExecutionResult.
            assert isinstance(answer, ExecutionResult)
            result = answer
            succeeded = not any(error_code(e) in UNDONE_CODES for e in result.errors or ())
            return result
        finally:
            # Counted first: a commit that fails (an outage) must not lose the use. Only an
            # organization's keys have usage; the operator and dashboard sign-ins have none.
            if key is not None:
                verifier.record_valid_use(key, _usage_label(context, result))
            _count_operation(context, result)
            await context.finish(succeeded=succeeded)

    async def _sign_in(
        self, presentation: Presentation, prefix: str, context: Context, sub_response: Response
    ) -> None:
        """The operator's key or a dashboard sign-in, instead of an organization's key."""
        answer = await self.platform.authenticate(presentation, prefix)
        if isinstance(answer, Refused):
            rejection = answer.rejection
            raise RequestRefused(
                Verification(
                    rejection.outcome, rejection.message, rejection.hint, ratelimit=answer.ratelimit
                )
            )
        if answer.operator is not None:
            context.authenticate_operator(answer.operator)
        elif answer.caller is not None:
            context.authenticate(answer.caller)
        sub_response.headers.update(answer.ratelimit.headers())

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        response = await super().process_result(request, result)
        for error in response.get("errors") or ():
            # Parse, validation and limit errors come from graphql-core without a code.
            extensions = cast(dict[str, Any], error).setdefault("extensions", {})
            extensions.setdefault("code", "BAD_USER_INPUT")
            message = cast(dict[str, Any], error)["message"]
            if len(message) > BOUNDED_MESSAGE:
                cast(dict[str, Any], error)["message"] = _with_excerpts(message)
        if never_executed(result):
            request.state.graphql_request_error = True
            if _wants_graphql_response_json(request):
                # GraphQL over HTTP: a request that never executed has no data entry at all.
                response.pop("data", None)
        return response

    async def run(self, request: Request, context: Any = None, root_value: Any = None) -> Response:  # type: ignore[override]
        response: Response = await super().run(request)
        if response.media_type == "application/json" and _wants_graphql_response_json(request):
            # GraphQL over HTTP: with this media type, a request that never executed is a 400.
            response.headers["content-type"] = GRAPHQL_RESPONSE_JSON
            if getattr(request.state, "graphql_request_error", False):
                response.status_code = 400
        return response
