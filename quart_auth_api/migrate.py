"""Alembic from the package: its configuration, the schema check and the upgrade.

`run.py` checks the schema before serving (and, with DB_AUTO_MIGRATE, upgrades it
first); Alembic is imported only here, and only when one of these runs, so a server
process never carries it.
"""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.pool import NullPool

from settings import PROJECT_ROOT, Settings

from .db import create_engine


def alembic_config(settings: Settings) -> Config:
    """Alembic's configuration for this project, on `settings.database_url`."""
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.attributes["database_url"] = settings.database_url
    return config


async def schema_problem(settings: Settings) -> str | None:
    """Why the database's schema is not at the migrations' head, or None when it is."""
    head = ScriptDirectory.from_config(alembic_config(settings)).get_current_head()
    engine = create_engine(settings, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            current = await connection.run_sync(_current_revision)
    finally:
        await engine.dispose()
    if current == head:
        return None
    return f"the database schema is at {current or 'nothing'}, the migrations at {head}"


def _current_revision(connection: Any) -> str | None:
    revision: str | None = MigrationContext.configure(connection).get_current_revision()
    return revision


def upgrade(settings: Settings) -> None:
    """`alembic upgrade head` on `settings.database_url`, without Alembic's own logging."""
    config = alembic_config(settings)
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")
