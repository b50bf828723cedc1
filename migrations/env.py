"""Alembic environment: the URL comes from ltm's configuration, never from alembic.ini."""

from __future__ import annotations

from alembic import context

from ltm_cli.storage.models import Base

target_metadata = Base.metadata
config = context.config


def run_migrations_offline() -> None:
    from ltm_cli.config import load_config
    from ltm_cli.storage.engine import resolve_url

    context.configure(url=resolve_url(load_config()), target_metadata=target_metadata,
                      literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:  # called by ltm itself, inside its own transaction and lock
        context.configure(connection=connection, target_metadata=target_metadata, transaction_per_migration=False)
        with context.begin_transaction():
            context.run_migrations()
        return
    # Plain `alembic …` from the repository root: resolve the URL the way `ltm` does.
    from ltm_cli.config import load_config
    from ltm_cli.storage.engine import create_engine_for, migration_lock, resolve_url

    engine = create_engine_for(resolve_url(load_config()))
    with engine.begin() as connection:
        migration_lock(connection)
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
