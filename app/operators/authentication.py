"""Who calls ``/graphql`` when it is not an organization's key: the operator (``kho_…``) or a
person signed in through a dashboard link (``khd_…``).

Organization keys stay with the one verification function (app/keys/verification.py); these
two credentials are few and used by people and a platform's backend, not on the data plane's
hot path, so they are read from the database on every request: a revoked operator key or a
suspended organization is refused from the next request on every instance, without a cache to
drop. Each has its own rate-limit budget, of the deployment's default size.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlmodel import col, select

from app.auth.outcomes import Outcome, Rejection
from app.auth.presentation import Presentation, choose_key
from app.auth.principal import Caller, Operator
from app.auth.secret import dashboard_prefix, hash_secret, operator_prefix
from app.keys.scopes import ScopeCatalogue
from app.kit.db import SessionMaker, outages_as_unavailable
from app.kit.ratelimit import Budget, RateLimiter, RateLimitStatus, rate_limit_item
from app.kit.timeutil import utcnow
from app.models.operators import DashboardCredential, OperatorKey
from app.models.organizations import Organization


@dataclass(frozen=True, slots=True)
class SignedIn:
    """An accepted operator key (``operator``) or dashboard credential (``caller``)."""

    operator: Operator | None
    caller: Caller | None
    ratelimit: RateLimitStatus


@dataclass(frozen=True, slots=True)
class Refused:
    rejection: Rejection
    ratelimit: RateLimitStatus | None = None


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class PlatformAuthenticator:
    def __init__(
        self,
        *,
        key_prefix: str,
        sessionmaker: SessionMaker,
        limiter: RateLimiter,
        catalogue: ScopeCatalogue,
        default_requests: int,
        default_per_seconds: int,
    ) -> None:
        self._operator_prefix = operator_prefix(key_prefix)
        self._dashboard_prefix = dashboard_prefix(key_prefix)
        self._sessionmaker = sessionmaker
        self._limiter = limiter
        self._catalogue = catalogue
        self._limit = rate_limit_item(default_requests, default_per_seconds)

    @property
    def operator_prefix(self) -> str:
        return self._operator_prefix

    def prefix_of(self, presentation: Presentation) -> str | None:
        """The operator or dashboard prefix, when the request presents such a credential (the
        rest, organization keys and mistakes alike, goes to the key verifier)."""
        for _, raw in presentation.values:
            value = raw.strip()
            for prefix in (self._operator_prefix, self._dashboard_prefix):
                if value.startswith(f"{prefix}_"):
                    return prefix
        return None

    async def authenticate(self, presentation: Presentation, prefix: str) -> SignedIn | Refused:
        """Raises Unavailable when the database does not answer."""
        chosen = choose_key(presentation, prefix)
        if isinstance(chosen, Rejection):
            return Refused(chosen)
        if prefix == self._operator_prefix:
            return await self._operator(hash_secret(chosen))
        return await self._dashboard(hash_secret(chosen))

    async def _operator(self, secret_hash: str) -> SignedIn | Refused:
        async with self._sessionmaker() as session:
            with outages_as_unavailable():
                key = (
                    await session.exec(
                        select(OperatorKey).where(col(OperatorKey.key_hash) == secret_hash)
                    )
                ).first()
        if key is None:
            return Refused(
                Rejection(
                    Outcome.UNKNOWN,
                    "This operator key does not exist.",
                    "Check that you copied the whole key; `keyhouse operator-keys list` on the "
                    "server shows the operator keys.",
                )
            )
        if key.revoked_at is not None:
            return Refused(
                Rejection(
                    Outcome.REVOKED,
                    f"This operator key was revoked at {_when(key.revoked_at)}.",
                    "Make a new one with `keyhouse operator-keys create` on the server.",
                )
            )
        return await self._within_budget(key.id, operator=key.principal())

    async def _dashboard(self, secret_hash: str) -> SignedIn | Refused:
        async with self._sessionmaker() as session:
            with outages_as_unavailable():
                found = (
                    await session.exec(
                        select(DashboardCredential, col(Organization.suspended_at))
                        .join(
                            Organization,
                            col(Organization.id) == col(DashboardCredential.organization_id),
                        )
                        .where(col(DashboardCredential.credential_hash) == secret_hash)
                    )
                ).first()
        if found is None:
            return Refused(
                Rejection(
                    Outcome.UNKNOWN,
                    "This dashboard sign-in does not exist.",
                    "Ask your provider for a new sign-in link.",
                )
            )
        credential, suspended_at = found
        if suspended_at is not None:
            return Refused(
                Rejection(
                    Outcome.ORGANIZATION_SUSPENDED,
                    "This organization is suspended.",
                    "Every key and sign-in of the organization is refused until the provider "
                    "resumes it.",
                )
            )
        if credential.expires_at <= utcnow():
            return Refused(
                Rejection(
                    Outcome.EXPIRED,
                    f"This dashboard sign-in expired at {_when(credential.expires_at)}.",
                    "Ask your provider for a new sign-in link.",
                )
            )
        caller = Caller(
            credential.organization_id,
            self._catalogue.names(),
            # What the organization's audit log names as the actor of a change made through
            # the dashboard: the link, and the operator key that made it.
            key_id=credential.link_id,
            key_hint=f"link by {credential.operator_key_hint or 'the CLI'}",
        )
        return await self._within_budget(credential.id, caller=caller)

    async def _within_budget(
        self, budget_id: str, *, operator: Operator | None = None, caller: Caller | None = None
    ) -> SignedIn | Refused:
        status = await self._limiter.hit(Budget.of(self._limit, budget_id))
        if not status.allowed:
            return Refused(
                Rejection(
                    Outcome.RATE_LIMITED,
                    f"This credential exceeded its rate limit of {status.limit} requests per "
                    f"{self._limit.get_expiry()} seconds.",
                    f"Retry after {status.retry_after} seconds.",
                ),
                status,
            )
        return SignedIn(operator, caller, status)
