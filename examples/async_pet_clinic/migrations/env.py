"""Alembic's environment for the pet clinic: Aurora DSQL, or the local emulator.

The database is chosen as for ``pet-clinic``: ``CLUSTER_ENDPOINT`` (with
``CLUSTER_USER``, ``AWS_REGION`` and the AWS credential chain) names a
cluster; without it, a local emulator runs for the length of the command,
which shows the migrations working and keeps nothing. A program that already
has a connection (a test, an app migrating itself at start-up) passes it in
``config.attributes["connection"]``. Nothing here is DSQL-specific beyond the
engine: ``sqlalchemy_dsql.alembic`` is found by Alembic itself.
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from async_pet_clinic.clinic import engine_factory
from async_pet_clinic.models import Base
from sqlalchemy.engine import Connection

config = context.config
target_metadata = Base.metadata
if config.config_file_name is not None:
    fileConfig(config.config_file_name)  # the [logger_*] sections of alembic.ini


def run_offline() -> None:
    """``alembic upgrade head --sql``: print the SQL instead of running it."""
    context.configure(dialect_name="auroradsql", target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


def run_on(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


async def run_online() -> None:
    with engine_factory() as (make_engine, _):
        engine = make_engine()
        try:
            async with engine.connect() as connection:
                await connection.run_sync(run_on)
        finally:
            await engine.dispose()


if context.is_offline_mode():
    run_offline()
elif isinstance(given := config.attributes.get("connection"), Connection):
    run_on(given)
else:
    asyncio.run(run_online())
