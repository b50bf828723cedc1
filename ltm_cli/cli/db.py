"""`ltm db …` and `ltm migrate …`: the database's life cycle."""

from __future__ import annotations

import typer

from ltm_cli.cli.common import JSON_OPTION, confirm, renderer, state
from ltm_cli.services import admin

app = typer.Typer(help="Create, inspect, start and stop the database.", no_args_is_help=True)
migrate_app = typer.Typer(help="Schema migrations (Alembic), on the same database ltm uses.",
                          no_args_is_help=True)


def _render_status(out, st: admin.Status) -> None:
    out.pairs([
        ("server", f"{st.server} ({st.url})"),
        ("PostgreSQL", st.server_version),
        ("pgvector", st.pgvector_version or "not installed"),
        ("schema", f"{st.revision or 'none'} (head {st.head}{', up to date' if st.at_head else ''})"),
        ("size", f"{st.database_size_bytes / 1e6:.1f} MB"),
        *([("data dir", st.data_dir)] if st.data_dir else []),
    ])
    out.table([{**s.__dict__, "retention": ", ".join(f"{k} {v}" for k, v in s.retention.items())}
               for s in st.stores],
              ["name", "settings", "conversations", "messages", "documents", "chunks", "notes", "retention"],
              title="stores", empty="no stores yet")
    if st.embedding_spaces:
        out.table([s.__dict__ for s in st.embedding_spaces], ["id", "provider", "model", "dim", "vectors", "index"],
                  title="embedding spaces")


@app.command("init")
def init(ctx: typer.Context, json: bool = JSON_OPTION) -> None:
    """Create the database objects (pgvector extension, tables, migrations to head). Safe to re-run."""
    s = state(ctx, json=json)
    out = renderer(s)
    result = admin.init(s.db())
    if not out.machine:
        out.success(f"database ready at schema {result.revision}")
    out.data(result, lambda v: _render_status(out, v))


@app.command("status")
def status(ctx: typer.Context, json: bool = JSON_OPTION) -> None:
    """Server, versions, schema revision, row counts per store and size."""
    s = state(ctx, json=json)
    out = renderer(s)
    out.data(s.memory().status(), lambda v: _render_status(out, v))


@app.command("start")
def start(ctx: typer.Context, json: bool = JSON_OPTION) -> None:
    """Start the embedded server (any command that needs it starts it too)."""
    s = state(ctx, json=json)
    out = renderer(s)
    result = admin.start_server(s.db())
    out.data(result, lambda v: out.success(
        f"embedded server {'started' if v.changed else 'already running'} (pid {v.pid}, {v.data_dir})"))


@app.command("stop")
def stop(ctx: typer.Context, json: bool = JSON_OPTION) -> None:
    """Stop the embedded server."""
    s = state(ctx, json=json)
    out = renderer(s)
    result = admin.stop_server(s.db())
    out.data(result, lambda v: out.success("embedded server stopped" if v.changed else
                                           "embedded server was not running"))


@app.command("gc")
def gc(
    ctx: typer.Context,
    dry_run: bool = typer.Option(False, "--dry-run", help="Count what would go; delete nothing."),
    json: bool = JSON_OPTION,
) -> None:
    """Apply each store's retention policy, then delete cached vectors nothing uses any more.

    Retention is a setting of the store: `ltm settings set retention.history 180d` deletes conversations whose
    last turn is older; `retention.notes 1y` deletes notes closed longer ago (periods: 180d, 12w, 6m, 1y).
    Exit code 7 while an ingest or a history write is running."""
    s = state(ctx, json=json)
    out = renderer(s)
    done = s.memory().gc(dry_run=dry_run)
    verb = "would remove" if done.dry_run else "removed"

    def human(d) -> None:
        for e in d.retention:
            policy = ", ".join(f"{k} {v}" for k, v in e.policy.items())
            if e.problem:
                out.warning(f"store {e.store}: retention not applied: {e.problem}")
                continue
            out.message(f"store {e.store} (retention {policy}): {verb} {e.conversations} conversation(s), "
                        f"{e.notes} closed note(s)")
        out.success(f"{verb} {d.vectors} unused vector(s)")

    out.data(done, human)


@migrate_app.command("upgrade")
def upgrade(ctx: typer.Context, revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Upgrade the schema to REVISION (default: head)."""
    s = state(ctx)
    s.db().upgrade(revision)
    renderer(s).success(f"schema at {s.db().current_revision()}")


@migrate_app.command("downgrade")
def downgrade(
    ctx: typer.Context,
    revision: str = typer.Argument(
        ..., help="Target revision: base, 0004, or -- -1 (one step down; a value starting with - goes after --)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Downgrade the schema to REVISION. Dropping tables loses their data: asks first unless --yes."""
    s = state(ctx)
    out = renderer(s)
    confirm(f"Downgrade the schema to {revision}? Tables dropped lose their data", yes=yes,
            refusal="refusing to downgrade without confirmation")
    s.db().downgrade(revision)
    out.success(f"schema at {s.db().current_revision() or 'base'}")


@migrate_app.command("current")
def current(ctx: typer.Context, json: bool = JSON_OPTION) -> None:
    """Print the database's schema revision."""
    s = state(ctx, json=json)
    rev = s.db().current_revision()
    out = renderer(s)
    out.data({"revision": rev, "head": admin.SCHEMA_HEAD}, lambda v: out.raw(v["revision"] or "base"))


@migrate_app.command("history")
def history(ctx: typer.Context, json: bool = JSON_OPTION) -> None:
    """List the migrations, oldest first, marking head and current."""
    s = state(ctx, json=json)
    out = renderer(s)
    revisions = admin.migration_history(s.db())
    out.data(revisions, lambda rows: out.table(
        [{**r.__dict__, "mark": ("current " if r.is_current else "") + ("head" if r.is_head else "")}
         for r in rows], ["revision", "down_revision", "message", "mark"]))
