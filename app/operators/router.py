"""The operator plane's HTTP routes beside ``/graphql``."""

from __future__ import annotations

from app.operators.authentication import PlatformAuthenticator
from app.runtime import Runtime


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
