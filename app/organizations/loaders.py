"""The organizations feature's DataLoaders, for the operator's lists that name organizations
(its audit log, usage by organization): a page of N rows costs one statement."""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import col, select
from strawberry.dataloader import DataLoader

from app.graphql.context import Context
from app.models.organizations import Organization


def organizations(context: Context) -> DataLoader[str, Organization | None]:
    """Any organization of the deployment by id: for operator fields only (an organization's
    key never reaches a field that names another organization)."""

    async def load(organization_ids: Sequence[str]) -> list[Organization | None]:
        async with context.db() as session:
            statement = select(Organization).where(col(Organization.id).in_(organization_ids))
            found = {row.id: row for row in (await session.exec(statement)).all()}
        return [found.get(organization_id) for organization_id in organization_ids]

    return DataLoader(load_fn=load)
