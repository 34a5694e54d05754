"""The baselines of benchmarks/verify.py: bare Starlette routes.

``GET /`` returns a small JSON body (the issue's baseline). ``POST /verify-shaped`` reads a
request body and answers with a body and headers the size of a verify answer, without doing
anything else: the same HTTP work as ``POST /v1/keys/verify``, to tell what the protocol costs
from what keyhouse adds.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

VERIFY_SHAPED_BODY = (
    b'{"valid":true,"code":"VALID","message":"The API key is valid.","hint":null,'
    b'"keyId":"key_0awCPpDn26Z5q05Bw3Qax1","organizationId":"org_3RTyIhQKy4YlXdwR4FkHqX",'
    b'"scopes":["read:analytics","read:api_keys","read:billing","read:charge_points",'
    b'"read:sessions","write:api_keys","write:billing","write:charge_points","write:webhooks"],'
    b'"expiresAt":null,"expiresSoon":false,"deprecated":false,"sunset":null,"replacedBy":null,'
    b'"ratelimit":{"limit":1000000000,"remaining":999999999,"reset":1795442463}}'
)
VERIFY_SHAPED_HEADERS = {
    "X-RateLimit-Limit": "1000000000",
    "X-RateLimit-Remaining": "999999999",
    "X-RateLimit-Reset": "1795442463",
}


async def hello(_: Request) -> JSONResponse:
    return JSONResponse({"status": "ok", "service": "bare"})


async def verify_shaped(request: Request) -> Response:
    await request.body()
    return Response(
        VERIFY_SHAPED_BODY, media_type="application/json", headers=VERIFY_SHAPED_HEADERS
    )


app = Starlette(
    routes=[
        Route("/", hello, methods=["GET"]),
        Route("/verify-shaped", verify_shaped, methods=["POST"]),
    ]
)
