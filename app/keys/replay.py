"""Idempotency replays of createApiKey and rotateApiKey: the earlier answer to the same request,
secret included, or a refusal when the idempotency key was used otherwise (idempotency.py
keeps the records)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel.ext.asyncio.session import AsyncSession

from app.auth.principal import Caller
from app.keys import idempotency
from app.keys.repository import superseded_by
from app.keys.schemas import KeyCreated, KeyRotated
from app.keys.validation import idempotency_misuse
from app.kit.errors import UserError
from app.models.keys import ApiKey


@dataclass(frozen=True, slots=True)
class Replay:
    """One request's idempotency: its earlier answer, if any, and remembering this one's."""

    session: AsyncSession
    caller: Caller
    idempotency_key: str | None
    digest: str
    server_secret: bytes | None
    # The server secret before the current one, during its rotation: records it sealed (24
    # hours of them at most) still answer their retries.
    previous_server_secret: bytes | None = None

    def _secret(self) -> bytes:
        if self.server_secret is None:
            raise ValueError("an idempotent request needs the server secret")
        return self.server_secret

    async def creation(self) -> KeyCreated | list[UserError] | None:
        replay = await self._earlier("createApiKey")
        if replay is None or isinstance(replay, UserError):
            return None if replay is None else [replay]
        api_key, secret, _ = replay
        # The same answer as the first time: the keys that creation superseded, too.
        superseded = await superseded_by(self.session, self.caller, api_key.id)
        return KeyCreated(api_key, secret, superseded)

    async def rotation(self) -> KeyRotated | list[UserError] | None:
        replay = await self._earlier("rotateApiKey")
        if replay is None or isinstance(replay, UserError):
            return None if replay is None else [replay]
        api_key, secret, previous = replay
        assert previous is not None, "a rotation record names the rotated key"
        return KeyRotated(api_key, secret, previous)

    async def _earlier(
        self, operation: str
    ) -> tuple[ApiKey, str, ApiKey | None] | UserError | None:
        """The earlier answer to the same request, an error if the idempotency key was used
        for another request (or by a caller of other power), or None when the key is new."""
        if self.idempotency_key is None:
            return None
        session = self.session
        for server_secret in (self._secret(), self.previous_server_secret):
            if server_secret is None:
                continue
            record = await idempotency.find(
                session, self.caller, self.idempotency_key, server_secret
            )
            if record is not None:
                break
        else:
            return None
        if record.operation != operation or record.request_digest != self.digest:
            return idempotency_misuse()
        api_key = await session.get(ApiKey, record.api_key_id)
        secret = idempotency.unseal(record.sealed_secret, self.idempotency_key, server_secret)
        if api_key is None or secret is None:
            return idempotency_misuse()
        # Fresh from the database: the power checks may have read the rotated key before a
        # concurrent first request replaced it.
        previous = (
            None
            if record.previous_api_key_id is None
            else await session.get(ApiKey, record.previous_api_key_id, populate_existing=True)
        )
        return api_key, secret, previous

    async def remember(
        self, operation: str, api_key_id: str, secret: str, previous_api_key_id: str | None = None
    ) -> None:
        if self.idempotency_key is None:
            return
        await idempotency.remember(
            self.session,
            self.caller,
            self.idempotency_key,
            self._secret(),
            operation=operation,
            digest=self.digest,
            api_key_id=api_key_id,
            secret=secret,
            previous_api_key_id=previous_api_key_id,
        )
