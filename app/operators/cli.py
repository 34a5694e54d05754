"""``keyhouse operator-keys``: the platform's operator keys, made on the server only.

The commands take the CLI's runner (a migrated database and a runtime, ``app.cli``) as an
argument, so that this module does not import the CLI that mounts it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from app.kit.db import session_scope
from app.kit.errors import UserError
from app.models.operators import OperatorKey
from app.operators import keys
from app.runtime import Runtime

T = TypeVar("T")
Runner = Callable[[Callable[[Runtime], Awaitable[Any]]], Any]

console = Console()
errors = Console(stderr=True, soft_wrap=True)


def _fail(error: UserError) -> typer.Exit:
    errors.print(f"[red]error[/red] {error.code}: {escape(error.message)}")
    return typer.Exit(code=2)


def _moment(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _as_json(key: OperatorKey) -> dict[str, object]:
    return {
        "id": key.id,
        "name": key.name,
        "hint": key.hint,
        "status": "REVOKED" if key.revoked_at else "ACTIVE",
        "createdAt": _moment(key.created_at),
        "revokedAt": _moment(key.revoked_at),
    }


def operator_keys_commands(run: Runner) -> typer.Typer:
    """The command group, running each command's work with ``run``."""
    group = typer.Typer(
        help="The platform's operator keys (kho_…): they create, list and suspend "
        "organizations through the operator API.",
        no_args_is_help=True,
    )

    @group.command("create")
    def create(
        name: Annotated[str, typer.Option(help="What the key is for, e.g. 'signup backend'.")],
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
    ) -> None:
        """Create an operator key; its secret is printed once."""

        async def work(runtime: Runtime) -> keys.OperatorKeyCreated | UserError:
            async with session_scope(runtime.sessionmaker) as session:
                return await keys.create_operator_key(
                    session, name, key_prefix=runtime.settings.key_prefix
                )

        result = run(work)
        if isinstance(result, UserError):
            raise _fail(result)
        if as_json:
            typer.echo(
                json.dumps({"operatorKeyId": result.operator_key.id, "operatorKey": result.secret})
            )
            return
        key = result.operator_key
        console.print(f"Operator key [bold]{escape(key.name)}[/bold] ({key.id})")
        console.print(f"  [bold green]{result.secret}[/bold green]  (shown once)", soft_wrap=True)

    @group.command("list")
    def list_(
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
    ) -> None:
        """The operator keys, newest first (never their secrets)."""

        async def work(runtime: Runtime) -> list[OperatorKey]:
            async with runtime.sessionmaker() as session:
                return await keys.list_operator_keys(session)

        found: list[OperatorKey] = run(work)
        if as_json:
            typer.echo(json.dumps([_as_json(key) for key in found]))
            return
        table = Table(
            Column("id", no_wrap=True), "name", Column("hint", no_wrap=True), "status", "created"
        )
        for key in found:
            status = "[red]REVOKED[/red]" if key.revoked_at else "ACTIVE"
            table.add_row(
                key.id, escape(key.name), key.hint, status, f"{key.created_at:%Y-%m-%d %H:%M}"
            )
        (console if console.is_terminal else Console(width=1000)).print(table)

    @group.command("revoke")
    def revoke(key_id: Annotated[str, typer.Argument(help="The operator key's id.")]) -> None:
        """Revoke an operator key, permanently: refused from its next request."""

        async def work(runtime: Runtime) -> OperatorKey | UserError:
            async with session_scope(runtime.sessionmaker) as session:
                return await keys.revoke_operator_key(session, key_id)

        result = run(work)
        if isinstance(result, UserError):
            raise _fail(result)
        assert result.revoked_at is not None
        console.print(
            f"Revoked {result.id} ({result.hint}) at {result.revoked_at:%Y-%m-%d %H:%M:%S} UTC"
        )

    return group
