"""The baseline of benchmarks/verify.py: a bare Starlette route returning a small JSON body."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def hello(_: Request) -> JSONResponse:
    return JSONResponse({"status": "ok", "service": "bare"})


app = Starlette(routes=[Route("/", hello, methods=["GET"])])
