"""Alembic environment: the URL comes from ltm's configuration, never from alembic.ini."""

from __future__ import annotations

from typing import Any

from alembic import context

from ltm_cli.storage.models import RUNTIME_INDEX_PREFIX, Base

target_metadata = Base.metadata
config = context.config


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Keep out of autogenerate what ltm creates at run time from the data: the per-space HNSW indexes
    (otherwise every `alembic revision --autogenerate` on a used database would drop them)."""
    runtime_index = (type_ == "index" and reflected and compare_to is None and obj.table.name == "embeddings"
                     and (name or "").startswith(RUNTIME_INDEX_PREFIX))
    return not runtime_index


# The same comparison whichever way Alembic is reached (ltm itself, or plain `alembic` from the checkout).
# Server defaults are compared too: the schema relies on them ('{}'::jsonb, now(), clock_timestamp()).
COMPARE_OPTIONS: dict[str, Any] = {
    "target_metadata": target_metadata,
    "include_object": include_object,
    "compare_type": True,
    "compare_server_default": True,
}


def run_migrations_offline() -> None:
    from ltm_cli.config import load_config
    from ltm_cli.storage.engine import resolve_url

    context.configure(url=resolve_url(load_config()), literal_binds=True, dialect_opts={"paramstyle": "named"},
                      **COMPARE_OPTIONS)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:  # called by ltm itself, inside its own transaction and lock
        context.configure(connection=connection, transaction_per_migration=False, **COMPARE_OPTIONS)
        with context.begin_transaction():
            context.run_migrations()
        return
    # Plain `alembic …` from the repository root: resolve the URL the way `ltm` does.
    from ltm_cli.config import load_config
    from ltm_cli.storage.engine import create_engine_for, migration_lock, resolve_url

    engine = create_engine_for(resolve_url(load_config()))
    with engine.begin() as connection:
        migration_lock(connection)
        context.configure(connection=connection, **COMPARE_OPTIONS)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
