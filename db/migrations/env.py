"""Alembic environment: one transaction per migration, bounded lock waits, one migrator at a time."""

from __future__ import annotations

import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine, text

from db.engine import sqlalchemy_url
from db.models import metadata

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

# Any advisory key works as long as every migrator uses the same one.
MIGRATION_LOCK_KEY = 0x70617930  # "pay0"


def include_object(obj, name, type_, reflected, compare_to):  # type: ignore[no-untyped-def]
    # procrastinate owns its own tables (created by a migration, not by our models).
    if type_ == "table" and name is not None and name.startswith("procrastinate_"):
        return False
    return True


def run_migrations_online() -> None:
    url = config.attributes.get("database_url") or os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit("DATABASE_URL is not set: point it at the Postgres database to migrate")
    engine = create_engine(sqlalchemy_url(url))
    with engine.connect() as connection:
        connection.execute(text("SET lock_timeout = '5s'"))
        connection.execute(text("SET statement_timeout = '5min'"))
        connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
        connection.commit()
        try:
            context.configure(
                connection=connection,
                target_metadata=metadata,
                include_object=include_object,
                transaction_per_migration=True,
            )
            with context.begin_transaction():
                context.run_migrations()
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
            connection.commit()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run against a database")
run_migrations_online()
