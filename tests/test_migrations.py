"""Alembic migrations on a brand-new database, on every backend.

Alembic runs as users run it (`python -m alembic ...` in the project root, the URL
from `DATABASE_URL`), in a subprocess: its `asyncio.run` cannot run in the test's
loop. The schema is then read back with SQLAlchemy's inspector.
"""

from __future__ import annotations

import asyncio
import stat
from dataclasses import dataclass
from typing import Any

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from quart_auth_api import db
from settings import to_async_url
from tests.helpers.processes import PROJECT_ROOT, run_alembic

APP_TABLES = {
    "users",
    "auth_sessions",
    "account_tokens",
    "outbox_messages",
    "totp_factors",
    "recovery_codes",
    "mfa_challenges",
}
#: The tables whose rows belong to one user (deleted with it).
USER_TABLES = sorted(APP_TABLES - {"users"})


@dataclass(frozen=True)
class Schema:
    """What the inspector sees: tables, and per table its named indexes and constraints."""

    tables: set[str]
    indexes: dict[str, dict[str, tuple[tuple[str, ...], bool]]]
    unique_constraints: dict[str, dict[str, tuple[str, ...]]]
    foreign_keys: dict[str, list[dict[str, Any]]]
    primary_keys: dict[str, str | None]


def _read_schema(connection: Any) -> Schema:
    inspector = inspect(connection)
    tables = set(inspector.get_table_names())
    app_tables = tables & APP_TABLES
    return Schema(
        tables=tables,
        indexes={
            table: {
                index["name"]: (tuple(index["column_names"]), bool(index["unique"]))
                for index in inspector.get_indexes(table)
                if not index.get("duplicates_constraint")  # PostgreSQL's unique-constraint index
            }
            for table in app_tables
        },
        unique_constraints={
            table: {
                uq["name"]: tuple(uq["column_names"])
                for uq in inspector.get_unique_constraints(table)
            }
            for table in app_tables
        },
        foreign_keys={table: inspector.get_foreign_keys(table) for table in app_tables},
        primary_keys={table: inspector.get_pk_constraint(table)["name"] for table in app_tables},
    )


async def inspect_schema(database_url: str) -> Schema:
    engine = create_async_engine(to_async_url(database_url), poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_read_schema)
    finally:
        await engine.dispose()


async def alembic(database_url: str, *args: str) -> str:
    """Run alembic in a thread (it blocks on its subprocess); its stdout."""
    result = await asyncio.to_thread(run_alembic, database_url, *args)
    return result.stdout


def revisions_newest_first() -> list[str]:
    """The revision ids from head down to the first one (the history is linear)."""
    script = ScriptDirectory.from_config(Config(str(PROJECT_ROOT / "alembic.ini")))
    assert len(script.get_heads()) == 1, script.get_heads()
    return [revision.revision for revision in script.walk_revisions()]


async def test_upgrade_head_creates_the_tables_and_indexes(scratch_database_url):
    """`upgrade head` on an empty database builds the tables with their named indexes,
    unique constraints, primary keys and cascading foreign keys."""
    assert (await inspect_schema(scratch_database_url)).tables == set()

    await alembic(scratch_database_url, "upgrade", "head")

    schema = await inspect_schema(scratch_database_url)
    assert schema.tables == APP_TABLES | {"alembic_version"}
    assert schema.indexes["auth_sessions"] == {
        "ix_auth_sessions_user_id": (("user_id",), False),
        "ix_auth_sessions_expires_at": (("expires_at",), False),
        "ix_auth_sessions_revoked_at": (("revoked_at",), False),
    }
    assert schema.unique_constraints["users"] == {
        "uq_users_email": ("email",),
        "uq_users_public_id": ("public_id",),
    }
    assert schema.indexes["account_tokens"] == {
        "ix_account_tokens_user_id": (("user_id",), False),
        "ix_account_tokens_expires_at": (("expires_at",), False),
        "ix_account_tokens_used_at": (("used_at",), False),
    }
    assert schema.unique_constraints["account_tokens"] == {"uq_account_tokens_digest": ("digest",)}
    assert schema.indexes["outbox_messages"] == {
        "ix_outbox_messages_user_id": (("user_id",), False),
        "ix_outbox_messages_next_attempt_at": (("next_attempt_at",), False),
        "ix_outbox_messages_sent_at": (("sent_at",), False),
        "ix_outbox_messages_failed_at": (("failed_at",), False),
    }
    assert schema.unique_constraints["totp_factors"] == {"uq_totp_factors_user_id": ("user_id",)}
    assert schema.indexes["recovery_codes"] == {
        "ix_recovery_codes_user_id": (("user_id",), False),
    }
    assert schema.indexes["mfa_challenges"] == {
        "ix_mfa_challenges_user_id": (("user_id",), False),
        "ix_mfa_challenges_expires_at": (("expires_at",), False),
    }
    assert schema.unique_constraints["mfa_challenges"] == {"uq_mfa_challenges_digest": ("digest",)}
    assert schema.primary_keys == {table: f"pk_{table}" for table in APP_TABLES}
    for table in USER_TABLES:
        [foreign_key] = schema.foreign_keys[table]
        assert foreign_key["name"] == f"fk_{table}_user_id_users"
        assert foreign_key["constrained_columns"] == ["user_id"]
        assert (foreign_key["referred_table"], foreign_key["referred_columns"]) == (
            "users",
            ["id"],
        )
        assert foreign_key["options"].get("ondelete") == "CASCADE"


async def test_models_and_migrations_agree(scratch_database_url):
    """After `upgrade head`, `alembic check` finds nothing to autogenerate: every
    model change has its revision."""
    await alembic(scratch_database_url, "upgrade", "head")

    output = await alembic(scratch_database_url, "check")

    assert "No new upgrade operations detected" in output


async def test_downgrade_steps_back_to_empty_and_upgrade_runs_again(scratch_database_url):
    """`downgrade -1` steps back one revision at a time until the tables are gone,
    `downgrade base` removes them too, `upgrade head` rebuilds them each time, and
    `alembic current` names the head revision."""
    revisions = revisions_newest_first()
    await alembic(scratch_database_url, "upgrade", "head")
    for revision in revisions:
        assert revision in await alembic(scratch_database_url, "current")
        await alembic(scratch_database_url, "downgrade", "-1")
    assert not (await inspect_schema(scratch_database_url)).tables & APP_TABLES
    assert (await alembic(scratch_database_url, "current")).strip() == ""

    await alembic(scratch_database_url, "upgrade", "head")
    assert (await inspect_schema(scratch_database_url)).tables >= APP_TABLES
    await alembic(scratch_database_url, "downgrade", "base")
    assert not (await inspect_schema(scratch_database_url)).tables & APP_TABLES

    await alembic(scratch_database_url, "upgrade", "head")
    schema = await inspect_schema(scratch_database_url)
    assert schema.tables == APP_TABLES | {"alembic_version"}
    current = await alembic(scratch_database_url, "current")
    assert current.split() == [revisions[0], "(head)"], current


def test_a_new_sqlite_database_is_private_to_its_owner(tmp_path):
    """The file and its WAL and shared-memory files 0600: they hold emails, password
    hashes and session addresses."""
    folder = tmp_path / "fresh"
    folder.mkdir()
    run_alembic(f"sqlite:///{folder / 'app.db'}", "upgrade", "head")

    files = sorted(path.name for path in folder.iterdir())
    assert files[0] == "app.db"
    for path in folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


async def test_the_projects_instance_folder_is_closed_again(tmp_path, monkeypatch):
    """An instance/ an older version left open (0755, files 0644) is closed at start;
    a folder the operator chose is never changed (production refuses it instead)."""
    instance = tmp_path / "instance"
    instance.mkdir(mode=0o755)
    instance.chmod(0o755)
    for name in ("app.db", "app.db-wal", "app.db-shm"):
        (instance / name).touch()
        (instance / name).chmod(0o644)
    monkeypatch.setattr(db, "INSTANCE_DIR", instance)
    db.private_sqlite_files(f"sqlite+aiosqlite:///{instance / 'app.db'}")

    assert stat.S_IMODE(instance.stat().st_mode) == 0o700
    assert {stat.S_IMODE(path.stat().st_mode) for path in instance.iterdir()} == {0o600}
    missing = tmp_path / "missing" / "app.db"  # never made here: SQLite says it is missing
    db.private_sqlite_files(f"sqlite+aiosqlite:///{missing}")
    assert not missing.parent.exists()
    elsewhere = tmp_path / "chosen"
    elsewhere.mkdir()
    (elsewhere / "app.db").touch()
    (elsewhere / "app.db").chmod(0o644)
    db.private_sqlite_files(f"sqlite+aiosqlite:///{elsewhere / 'app.db'}")
    assert stat.S_IMODE((elsewhere / "app.db").stat().st_mode) == 0o644
