"""Key verification as a FastAPI dependency, for Python services that run keyhouse in process.

    runtime = Runtime.create(Settings())
    app = FastAPI(lifespan=...)            # start/stop the runtime in the lifespan
    app.state.runtime = runtime

    @app.get("/charge-points")
    async def charge_points(key: Annotated[KeyRecord, Depends(require_key("read:charge_points"))]):
        ...

It is the same verification as ``/v1/keys/verify`` and ``/v1/auth``, rate limit and usage
included; a refused key becomes an HTTP error with the reason's code, message and hint.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import HTTPException, Request

from app.auth.network import request_client
from app.auth.presentation import from_request
from app.keys.cache import KeyRecord
from app.runtime import Runtime


def require_key(*scopes: str) -> Callable[[Request], Awaitable[KeyRecord]]:
    async def verified_key(request: Request) -> KeyRecord:
        runtime: Runtime = request.app.state.runtime
        verification = await runtime.verifier.verify(
            from_request(request.headers.raw, request.url.query, request.url.path),
            required_scopes=scopes,
            operation=f"{request.method} {request.url.path}",
            client=request_client(
                request.scope.get("client"),
                request.headers,
                runtime.settings.trusted_proxy_networks,
            ),
            cost=1,
        )
        if verification.valid and verification.key is not None:
            return verification.key
        headers = {} if verification.ratelimit is None else verification.ratelimit.headers()
        if verification.outcome.http_status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="keyhouse"'
        raise HTTPException(
            status_code=verification.outcome.http_status,
            detail={
                "code": verification.outcome.value,
                "message": verification.message,
                "hint": verification.hint,
            },
            headers=headers,
        )

    return verified_key
