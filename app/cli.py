"""The ``keyhouse`` command: serve, set up, and manage organizations and keys by hand."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlmodel import col, select

from app import backup, serving
from app.auth.principal import Caller
from app.config import Plane, Settings
from app.keys import repository as keys_repository
from app.keys import revocation as keys_revocation
from app.keys import rotation as keys_rotation
from app.keys import schemas as keys_schemas
from app.keys import service as keys_service
from app.kit.boundary import name_key
from app.kit.db import session_scope
from app.kit.errors import BadUserInput, UserError
from app.kit.pagination import Cursor
from app.kit.server_secret import MissingServerSecret
from app.kit.server_secret import generate as generate_secret
from app.kit.timeutil import utcnow
from app.main import tracing_for
from app.migrate import setup_lock, upgrade_to_head
from app.models.keys import ApiKey, KeyStatus, ListedKey
from app.models.organizations import Organization
from app.models.usage import Counts, Granularity
from app.operators.cli import operator_keys_commands
from app.organizations.service import OrganizationCreated, create_organization
from app.runtime import Runtime
from app.usage import service as usage_service

if TYPE_CHECKING:
    from app.kit.tracing import Tracing

app = typer.Typer(help="keyhouse: issue, scope, verify and meter API keys.", no_args_is_help=True)
orgs_app = typer.Typer(help="Organizations.", no_args_is_help=True)
keys_app = typer.Typer(help="An organization's API keys.", no_args_is_help=True)
app.add_typer(orgs_app, name="orgs")
app.add_typer(keys_app, name="keys")
secret_app = typer.Typer(help="The server secret (KEYHOUSE_SECRET_KEY).", no_args_is_help=True)
app.add_typer(secret_app, name="secret")

console = Console()
# Messages name user input (key names, scopes): printed escaped, never as Rich markup, and on one
# line however narrow the terminal, so that scripts can read them.
errors = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")

DEFAULT_ORGANIZATION = "Default organization"


def _run(work: Callable[[Runtime], Awaitable[T]]) -> T:
    """Run ``work`` against a migrated database, without the server's background tasks."""

    async def main() -> T:
        settings = Settings()
        runtime = _runtime(settings)
        try:
            try:
                await upgrade_to_head(runtime.engine)
            except (OSError, DBAPIError) as error:
                # A wrong KEYHOUSE_DATABASE_URL: say which database and why, not a traceback.
                reason = error.orig if isinstance(error, DBAPIError) else error
                where = make_url(settings.database_url).render_as_string(hide_password=True)
                errors.print(
                    f"[red]error[/red] cannot open the database {escape(where)} "
                    f"(KEYHOUSE_DATABASE_URL): {escape(str(reason).splitlines()[0])}"
                )
                raise typer.Exit(code=1) from None
            return await work(runtime)
        finally:
            await runtime.broadcast.close()
            await runtime.engine.dispose()

    return asyncio.run(main())


def _runtime(settings: Settings, *, tracing: Tracing | None = None) -> Runtime:
    try:
        return Runtime.create(settings, tracing=tracing)
    except MissingServerSecret as error:
        errors.print(f"[red]error[/red] {escape(str(error))}")
        raise typer.Exit(code=1) from None


def _served_runtime(settings: Settings) -> Runtime:
    """What `serve` answers with in one process: traced when KEYHOUSE_OTEL_ENDPOINT is set (the
    other commands never are; each worker of --workers makes its own in create_app)."""
    return _runtime(settings, tracing=tracing_for(settings))


def _fail(error: UserError) -> typer.Exit:
    errors.print(f"[red]error[/red] {error.code}: {escape(error.message)}")
    return typer.Exit(code=2)


async def _name_taken(runtime: Runtime, name: str) -> UserError | None:
    """An organization already named ``name`` as people read it (case, width...): the operator
    who runs `init` twice, or `orgs create` with a name in use, meant the one that exists."""
    wanted = name_key(name.strip())
    async with runtime.sessionmaker() as session:
        rows = await session.exec(select(Organization.id, Organization.name))
        for organization_id, existing in rows:
            if name_key(existing) == wanted:
                return UserError(
                    "NAME_TAKEN",
                    "name",
                    f"An organization named {existing!r} exists already ({organization_id}); "
                    "choose another name. Its admin key was shown when it was created: if it "
                    "is lost, make another with `keyhouse keys create --organization "
                    f"{organization_id} --name admin-2 --scope ...`.",
                )
    return None


async def _new_organization(runtime: Runtime, name: str) -> OrganizationCreated | UserError:
    taken = await _name_taken(runtime, name)
    if taken is not None:
        return taken
    async with session_scope(runtime.sessionmaker) as session:
        return await create_organization(
            session,
            name,
            catalogue=runtime.catalogue,
            key_prefix=runtime.settings.key_prefix,
            broadcast=runtime.broadcast,
        )


def _print_organization(created: OrganizationCreated, *, as_json: bool) -> None:
    if as_json:
        typer.echo(
            json.dumps(
                {"organizationId": created.organization.id, "apiKey": created.admin_key.secret}
            )
        )
        return
    console.print(
        f"Organization [bold]{escape(created.organization.name)}[/bold] ({created.organization.id})"
    )
    console.print("Admin key (shown once, store it now):")
    console.print(f"  [bold green]{created.admin_key.secret}[/bold green]", soft_wrap=True)


@app.command()
def init(
    organization: Annotated[str, typer.Option(help="Name of the first organization.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """Create the database (migrations), an organization and its admin key."""
    created = _run(lambda runtime: _new_organization(runtime, organization))
    if isinstance(created, UserError):
        raise _fail(created)
    _print_organization(created, as_json=as_json)


@orgs_app.command("create")
def orgs_create(
    name: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """Create a further organization with its own admin key."""
    created = _run(lambda runtime: _new_organization(runtime, name))
    if isinstance(created, UserError):
        raise _fail(created)
    _print_organization(created, as_json=as_json)


@orgs_app.command("list")
def orgs_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """The organizations, oldest first: their ids are what the keys commands take."""

    async def work(runtime: Runtime) -> list[Organization]:
        async with runtime.sessionmaker() as session:
            statement = select(Organization).order_by(
                col(Organization.created_at), col(Organization.id)
            )
            return list((await session.exec(statement)).all())

    organizations = _run(work)
    if as_json:
        rows = [
            {"id": org.id, "name": org.name, "createdAt": org.created_at.isoformat()}
            for org in organizations
        ]
        typer.echo(json.dumps(rows))
        return
    table = Table("id", "name", Column("created", no_wrap=True))
    for org in organizations:
        table.add_row(org.id, escape(org.name), f"{org.created_at:%Y-%m-%d %H:%M}")
    console.print(table)


def _operator(runtime: Runtime, organization_id: str) -> Caller:
    # The operator at the console may do anything within the organization it names.
    return Caller(organization_id=organization_id, scopes=runtime.catalogue.names())


async def _require_organization(runtime: Runtime, organization_id: str) -> None:
    async with runtime.sessionmaker() as session:
        if await session.get(Organization, organization_id) is None:
            raise _fail(
                UserError("NOT_FOUND", "organization", f"No organization {organization_id!r}.")
            )


@keys_app.command("create")
def keys_create(
    organization: Annotated[str, typer.Option(help="Organization id.")],
    name: Annotated[str, typer.Option(help="Key name, unique among live keys.")],
    scope: Annotated[list[str], typer.Option(help="A scope to grant (repeat the option).")],
    expires_in_days: Annotated[int | None, typer.Option(help="1 to 3650 days.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """Create a key; its secret is printed once."""

    async def work(runtime: Runtime) -> keys_schemas.KeyCreated | list[UserError]:
        await _require_organization(runtime, organization)
        async with session_scope(runtime.sessionmaker) as session:
            return await keys_service.create_key(
                session,
                _operator(runtime, organization),
                keys_schemas.KeyCreate(name=name, scopes=scope, expires_in_days=expires_in_days),
                catalogue=runtime.catalogue,
                key_prefix=runtime.settings.key_prefix,
                broadcast=runtime.broadcast,
            )

    result = _run(work)
    if isinstance(result, list):
        for error in result:
            errors.print(f"[red]error[/red] {error.code} ({error.field}): {escape(error.message)}")
        raise typer.Exit(code=2)
    if as_json:
        typer.echo(json.dumps({"id": result.api_key.id, "apiKey": result.secret}))
        return
    console.print(f"Key [bold]{escape(result.api_key.name)}[/bold] ({result.api_key.id})")
    console.print(f"  [bold green]{result.secret}[/bold green]  (shown once)", soft_wrap=True)


@keys_app.command("list")
def keys_list(
    organization: Annotated[str, typer.Option(help="Organization id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """List an organization's keys (never their secrets)."""

    async def work(runtime: Runtime) -> list[ListedKey]:
        await _require_organization(runtime, organization)
        rows: list[ListedKey] = []
        cursor = None
        async with runtime.sessionmaker() as session:
            while True:
                page = await keys_repository.list_keys(
                    session,
                    _operator(runtime, organization),
                    keys_schemas.KeyFilter(),
                    first=100,
                    after=cursor,
                    catalogue=runtime.catalogue,
                )
                rows.extend(page.keys)
                if not page.has_next_page:
                    return rows
                cursor = Cursor(page.keys[-1].created_at, page.keys[-1].id)

    rows = _run(work)
    now = utcnow()
    if as_json:
        typer.echo(json.dumps([_key_json(row, now) for row in rows]))
        return
    # Ids and hints are what `keys revoke` and a user need whole: never cut short.
    table = Table(
        Column("id", no_wrap=True),
        "name",
        Column("hint", no_wrap=True),
        "scopes",
        "status",
        "created",
        "expires",
        "last used",
    )
    for row in rows:
        status = row.status_at(now)
        table.add_row(
            row.id,
            escape(row.name),
            row.hint,
            " ".join(row.scopes),
            f"[red]{status}[/red]" if status is not KeyStatus.ACTIVE else str(status),
            f"{row.created_at:%Y-%m-%d %H:%M}",
            "-" if row.expires_at is None else f"{row.expires_at:%Y-%m-%d}",
            "never" if row.last_used_at is None else f"{row.last_used_at:%Y-%m-%d %H:%M}",
        )
    # Piped or redirected output has no terminal width to fit (Rich would assume 80 columns and
    # cut ids short): print the table whole.
    (console if console.is_terminal else Console(width=1000)).print(table)


def _key_json(row: ListedKey | ApiKey, now: datetime) -> dict[str, object]:
    def moment(value: datetime | None) -> str | None:
        return None if value is None else value.isoformat()

    return {
        "id": row.id,
        "name": row.name,
        "hint": row.hint,
        "scopes": list(row.scopes),
        "status": str(row.status_at(now)),
        "createdAt": moment(row.created_at),
        "expiresAt": moment(row.expires_at),
        "revokedAt": moment(row.revoked_at),
        "lastUsedAt": moment(row.last_used_at),
    }


@keys_app.command("revoke")
def keys_revoke(
    organization: Annotated[str, typer.Option(help="Organization id.")],
    key_id: Annotated[str, typer.Argument(help="The key's id.")],
) -> None:
    """Revoke a key, permanently."""

    async def work(runtime: Runtime) -> ApiKey | UserError:
        async with session_scope(runtime.sessionmaker) as session:
            return await keys_revocation.revoke_key(
                session, _operator(runtime, organization), key_id, broadcast=runtime.broadcast
            )

    result = _run(work)
    if isinstance(result, UserError):
        raise _fail(result)
    console.print(
        f"Revoked {result.id} ({result.hint}) at {result.revoked_at:%Y-%m-%d %H:%M:%S} UTC"
    )


@keys_app.command("show")
def keys_show(
    organization: Annotated[str, typer.Option(help="Organization id.")],
    key_id: Annotated[str, typer.Argument(help="The key's id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """One key: its name, scopes, status, dates and limits (never its secret)."""

    async def work(runtime: Runtime) -> ApiKey:
        async with runtime.sessionmaker() as session:
            key = await keys_repository.get_key(session, _operator(runtime, organization), key_id)
        if key is None:
            raise _fail(UserError("NOT_FOUND", "id", f"No key {key_id!r} in {organization!r}."))
        return key

    key = _run(work)
    shown = _key_json(key, utcnow())
    shown["rateLimit"] = (
        None
        if key.rate_limit_requests is None
        else {"requests": key.rate_limit_requests, "perSeconds": key.rate_limit_per_seconds}
    )
    shown["replacedBy"] = key.superseded_by_key_id
    if as_json:
        typer.echo(json.dumps(shown))
        return
    for field, value in shown.items():
        text = " ".join(value) if isinstance(value, list) else value
        console.print(f"{field:>11}  {escape(str('-' if text is None else text))}", soft_wrap=True)


@keys_app.command("rotate")
def keys_rotate(
    organization: Annotated[str, typer.Option(help="Organization id.")],
    key_id: Annotated[str, typer.Argument(help="The key's id.")],
    grace_period_hours: Annotated[
        int, typer.Option(help="Hours the old secret keeps working (0: stops at once).")
    ] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """A new secret for the key (same name, scopes and limits), printed once; the old one is
    refused as SUPERSEDED after the grace period."""

    async def work(runtime: Runtime) -> keys_schemas.KeyRotated | list[UserError]:
        async with session_scope(runtime.sessionmaker) as session:
            return await keys_rotation.rotate_key(
                session,
                _operator(runtime, organization),
                keys_schemas.KeyRotate(key_id=key_id, grace_period_hours=grace_period_hours),
                key_prefix=runtime.settings.key_prefix,
                broadcast=runtime.broadcast,
            )

    result = _run(work)
    if isinstance(result, list):
        for error in result:
            errors.print(f"[red]error[/red] {error.code} ({error.field}): {escape(error.message)}")
        raise typer.Exit(code=2)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "id": result.api_key.id,
                    "apiKey": result.secret,
                    "previousId": result.previous.id,
                    "previousStopsAt": result.previous.superseded_at.isoformat()
                    if result.previous.superseded_at
                    else None,
                }
            )
        )
        return
    console.print(f"Key [bold]{escape(result.api_key.name)}[/bold] ({result.api_key.id})")
    console.print(f"  [bold green]{result.secret}[/bold green]  (shown once)", soft_wrap=True)
    stops = result.previous.superseded_at
    console.print(
        f"The old secret ({result.previous.hint}) is refused from "
        f"{'now' if stops is None else f'{stops:%Y-%m-%d %H:%M:%S} UTC'}."
    )


@app.command("usage")
def usage_command(
    organization: Annotated[str, typer.Option(help="Organization id.")],
    days: Annotated[
        int, typer.Option(help="The last DAYS days, today included.", min=1, max=3650)
    ] = 30,
    key: Annotated[str | None, typer.Option(help="One key's id, instead of all keys.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """An organization's uses over the last days (requests, valid, rejected): in total, by
    key (the 20 most used) and by outcome. The same figures as the `usage` query."""
    settings = Settings()
    end = usage_service.floor_to(utcnow(), Granularity.DAY) + timedelta(days=1)
    try:
        query = usage_service.checked_query(
            settings, end - timedelta(days=days), end, Granularity.DAY, api_key_id=key
        )
    except BadUserInput as error:
        raise _fail(UserError("INVALID_INPUT", "days", error.message)) from None

    async def work(runtime: Runtime) -> UsageFigures:
        await _require_organization(runtime, organization)
        caller = _operator(runtime, organization)
        async with runtime.sessionmaker() as session:
            by_key = await usage_service.by_key(session, caller, query, first=20)
            return UsageFigures(
                total=await usage_service.totals(session, caller, query),
                by_key=by_key,
                by_outcome=await usage_service.by_outcome(session, caller, query),
                keys=await keys_repository.get_keys(
                    session, caller, [share.label for share in by_key]
                ),
            )

    figures = _run(work)
    by_key = [
        {"id": share.label, "name": figures.name_of(share.label), **_counts_json(share.counts)}
        for share in figures.by_key
    ]
    if as_json:
        answer = {
            "from": query.start.isoformat(),
            "to": query.end.isoformat(),
            **_counts_json(figures.total),
            "byKey": by_key,
            "byOutcome": [
                {"outcome": share.label, "requests": share.counts.requests}
                for share in figures.by_outcome
            ],
        }
        typer.echo(json.dumps(answer))
        return
    total = figures.total
    console.print(
        f"{query.start:%Y-%m-%d} to {query.end - timedelta(days=1):%Y-%m-%d} (UTC days): "
        f"{total.requests:,} requests, "
        f"{total.valid:,} valid, {total.rejected:,} rejected"
    )
    table = Table(Column("key", no_wrap=True), "name", "requests", "valid", "rejected")
    for share in figures.by_key:
        counts = share.counts
        name = figures.name_of(share.label)
        table.add_row(
            share.label,
            "-" if name is None else escape(name),
            f"{counts.requests:,}",
            f"{counts.valid:,}",
            f"{counts.rejected:,}",
        )
    (console if console.is_terminal else Console(width=1000)).print(table)
    outcomes = ", ".join(f"{s.label} {s.counts.requests:,}" for s in figures.by_outcome)
    console.print(f"By outcome: {outcomes or '-'}")


@dataclass(frozen=True)
class UsageFigures:
    total: Counts
    by_key: list[usage_service.Share]
    by_outcome: list[usage_service.Share]
    keys: dict[str, ApiKey]

    def name_of(self, key_id: str) -> str | None:
        key = self.keys.get(key_id)
        return None if key is None else key.name


def _counts_json(counts: Counts) -> dict[str, int]:
    return {"requests": counts.requests, "valid": counts.valid, "rejected": counts.rejected}


@secret_app.command("generate")
def secret_generate() -> None:
    """Print a new server secret: 32 random bytes as 64 hex characters, for KEYHOUSE_SECRET_KEY.
    Every instance of a deployment needs the same one."""
    typer.echo(generate_secret())


@app.command("backup")
def backup_command(
    path: Annotated[Path, typer.Argument(help="The file to write (replaced once complete).")],
) -> None:
    """Copy the database to PATH while keyhouse serves: SQLite's online backup, or pg_dump's
    custom format on PostgreSQL. The server secret is not in it: keep it apart."""
    settings = Settings()
    try:
        backup.backup(settings.database_url, path)
    except backup.BackupFailed as error:
        errors.print(f"[red]error[/red] {escape(str(error))}")
        raise typer.Exit(code=1) from None
    console.print(f"Backed up to {escape(str(path))} ({path.stat().st_size:,} bytes)")


@app.command("restore")
def restore_command(
    path: Annotated[Path, typer.Argument(help="A file written by `keyhouse backup`.")],
) -> None:
    """Restore a backup into the empty database KEYHOUSE_DATABASE_URL names, then migrate it
    to this version's schema. Refused, changing nothing, when that database has tables."""
    settings = Settings()
    try:
        backup.restore(settings.database_url, path)
    except backup.BackupFailed as error:
        errors.print(f"[red]error[/red] {escape(str(error))}")
        raise typer.Exit(code=1) from None
    console.print(f"Restored {escape(str(path))}; start keyhouse with the deployment's secret.")


@app.command("export-schema")
def export_schema(
    output: Annotated[
        Path | None, typer.Option(help="Write to this file instead of stdout.")
    ] = None,
) -> None:
    """Print the GraphQL schema (SDL); schema.graphql at the root is this output."""
    from app.graphql.schema import build_schema

    sdl = build_schema(Settings()).as_str() + "\n"
    if output is None:
        typer.echo(sdl, nl=False)
    else:
        output.write_text(sdl)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    plane: Annotated[
        Plane | None,
        typer.Option(
            help="What to answer: data (verify, forward auth), control (GraphQL) or all; "
            "default: KEYHOUSE_PLANE, else all.",
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            help="Processes answering on the port (one per core); more than 1 needs "
            "KEYHOUSE_REDIS_URL."
        ),
    ] = 1,
) -> None:
    """Run the service. On an empty database, first creates an organization and its admin key."""
    settings = Settings() if plane is None else Settings(plane=plane)
    problem = serving.workers_problem(settings, workers)
    if problem is not None:
        errors.print(f"[red]error[/red] {escape(problem)}")
        raise typer.Exit(code=2)

    async def bootstrap(runtime: Runtime) -> OrganizationCreated | UserError | None:
        # Instances started together on an empty database create one first organization.
        async with setup_lock(runtime.engine):
            async with runtime.sessionmaker() as session:
                if (await session.exec(select(Organization.id).limit(1))).first() is not None:
                    return None
            return await _new_organization(runtime, DEFAULT_ORGANIZATION)

    created = _run(bootstrap)
    if isinstance(created, OrganizationCreated):
        console.print("[bold]First start:[/bold] created an organization and its admin key.")
        _print_organization(created, as_json=False)
    else:
        # The admin key was shown once, at first start; say how to get another if it was lost.
        console.print(
            "Admin key lost? Make another with `keyhouse keys create --organization ORG_ID "
            "--name admin --scope read:api_keys --scope write:api_keys ...` "
            "(`keyhouse orgs list` shows the organizations' ids)."
        )
    if settings.plane is not Plane.DATA:
        console.print(
            f"GraphiQL: http://{host}:{port}/graphql  "
            "(send the key as header X-API-Key in GraphiQL's Headers tab)"
        )
    serving.serve(settings, host=host, port=port, workers=workers, runtime=_served_runtime)


# The operator's keys: their commands live with the operator plane (app/operators/cli.py).
app.add_typer(operator_keys_commands(_run), name="operator-keys")


def main() -> None:
    try:
        app()
    except ValidationError as error:
        # A setting that cannot be used: one line each, naming the variable, never its value.
        for problem in error.errors():
            variable = "KEYHOUSE_" + "_".join(str(part) for part in problem["loc"]).upper()
            message = problem["msg"].removeprefix("Value error, ")
            errors.print(f"[red]error[/red] {variable}: {escape(message)}")
        raise SystemExit(2) from None
