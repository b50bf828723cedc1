"""Embedding spaces of a store: which rows have a vector in which space, and migrating them to another space."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ltm_cli.services.embedding import EMBED_BATCH, Progress, content_hash, embed_and_cache, no_progress, space_of
from ltm_cli.storage import vectors

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from ltm_cli.config import Config
    from ltm_cli.embedders.base import Embedder
    from ltm_cli.storage.engine import Database
    from ltm_cli.storage.stores import StoreRef

# Search kind -> (table, what the status and migrate reports call its rows). Rows without an embed_hash (none
# are written today) can never have a vector, so they are left out of every count.
TABLES = {"docs": ("chunks", "chunks"), "history": ("messages", "messages"), "notes": ("notes", "notes")}


def _label(embedder: Embedder) -> str:
    return f"{embedder.provider}:{embedder.model} ({embedder.dim} dims)"


def fix_command(store: StoreRef) -> str:
    """The command that embeds what a store lacks in the configured space."""
    return "ltm embed migrate" + (f" --store {store.name}" if store.name != "default" else "")


# -- the search warning ------------------------------------------------------------------------------------
WARNING_SAMPLE = 200  # newest rows per kind a search checks for vectors in its space


def unembedded_sql(space: int | None, kinds: Sequence[str]) -> str | None:
    """Per kind: (kind, rows checked, rows without a vector in `space`) among the store's newest WARNING_SAMPLE
    rows, as one query with the parameter `:store`, which search runs in the same round trip as its first
    retrievers. A sample keeps every search cheap at any size (a full count is `ltm embed status`): after a
    model change no row has a vector, and `ltm embed migrate` works oldest first, so rows it has not reached
    yet are always among the newest. Not cached: it would go stale the moment an ingest or a migrate commits."""
    parts = []
    for kind in kinds:
        table = TABLES[kind][0]
        lacking = "count(*)" if space is None else (
            f"count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM embeddings e WHERE e.space_id = {int(space)} "
            f"AND e.content_hash = x.embed_hash))")
        # The newest ids come from an index-only scan of (store_id, id); joining back by primary key keeps the
        # planner off a backward walk of the whole primary key through other stores' newer rows.
        parts.append(f"SELECT '{kind}' AS kind, count(*) AS total, {lacking} AS lacking FROM (SELECT id FROM {table} "
                     f"WHERE store_id = :store ORDER BY id DESC LIMIT {WARNING_SAMPLE}) newest "
                     f"JOIN {table} x ON x.id = newest.id WHERE x.embed_hash IS NOT NULL")
    return " UNION ALL ".join(parts) if parts else None


def warning(counts: dict[str, tuple[int, int]], embedder: Embedder, store: StoreRef, mode: str) -> str | None:
    """One line saying how many searched rows the vector leg cannot see, and the command that fixes it."""
    lacking = sum(n for _, n in counts.values())
    if not lacking:
        return None
    total = sum(t for t, _ in counts.values())
    detail = ", ".join(f"{n} {TABLES[kind][1]}" for kind, (_, n) in counts.items() if n)
    effect = "vector search cannot find them" if mode == "vector" else "search finds them by keyword only"
    sampled = any(t >= WARNING_SAMPLE for t, _ in counts.values())
    of = f"{lacking} of the {total} newest stored texts checked" if sampled else f"{lacking} of {total} stored texts"
    return (f"{of} ({detail}) have no vector for {_label(embedder)}: {effect}; "
            f"run `{fix_command(store)}` to embed them (`ltm embed status` counts them all)")


# -- status ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpaceUse:
    space_id: int | None
    provider: str
    model: str
    dim: int
    active: bool
    chunks: int = 0
    messages: int = 0
    notes: int = 0


@dataclass(frozen=True)
class EmbedStatus:
    store: str
    active: str  # provider:model (dim dims) of the active space
    totals: dict[str, int]  # rows per table (chunks, messages, notes)
    missing: dict[str, int]  # rows per table without a vector in the active space
    spaces: list[SpaceUse] = field(default_factory=list)
    fix: str | None = None  # the command that embeds the missing rows, when any are
    source: str | None = None  # why that space is active: the store's embedding.space setting, or configuration


def status(db: Database, embedder: Embedder, store: StoreRef, *, source: str | None = None) -> EmbedStatus:
    """Every space the store's rows have vectors in (and the active one), with counts per table."""
    from sqlalchemy import text

    names = [name for _, name in TABLES.values()]
    with db.connect() as conn:
        sid = store.id(conn, create=False)
        active = vectors.find_space(conn, embedder.provider, embedder.model, embedder.dim)
        used: dict[int, dict[str, int]] = {}
        totals = dict.fromkeys(names, 0)
        if sid is not None:
            for table, name in TABLES.values():
                totals[name] = conn.execute(text(f"SELECT count(*) FROM {table} WHERE store_id = :s "
                                                 "AND embed_hash IS NOT NULL"), {"s": sid}).scalar()
                for r in conn.execute(text(
                        f"SELECT e.space_id, count(*) AS n FROM {table} x JOIN embeddings e "
                        f"ON e.content_hash = x.embed_hash WHERE x.store_id = :s GROUP BY e.space_id"), {"s": sid}):
                    used.setdefault(r.space_id, dict.fromkeys(names, 0))[name] = r.n
        ids = sorted(set(used) | ({active} if active is not None else set()))
        rows = {r.id: r for r in conn.execute(text(
            "SELECT id, provider, model, dim FROM embedding_spaces WHERE id = ANY(:ids)"), {"ids": ids})}
    spaces = [SpaceUse(i, rows[i].provider, rows[i].model, rows[i].dim, i == active, **used.get(i, {}))
              for i in ids]
    if active is None:
        spaces.append(SpaceUse(None, embedder.provider, embedder.model, embedder.dim, True))
    have = next((s for s in spaces if s.active), None)
    missing = {name: totals[name] - (getattr(have, name) if have else 0) for name in names}
    return EmbedStatus(store.name, _label(embedder), totals, missing, spaces,
                       fix_command(store) if any(missing.values()) else None, source)


# -- migrate ---------------------------------------------------------------------------------------------
def target_embedder(config: Config, to: str | None, dimensions: int | None) -> Embedder:
    """The embedder named by `--to PROVIDER[:MODEL]` and `--dimensions` (unset: the configured one)."""
    from ltm_cli.embedders import get_embedder
    from ltm_cli.errors import InvalidInputError

    changes: dict[str, Any] = {}
    if to:
        provider, _, model = to.partition(":")
        changes["embedder"] = provider.strip()
        from ltm_cli.embedders.registry import embedder_factory

        embedder_factory(provider.strip())  # an unknown name is said as such, whatever follows the colon
        if model.strip():
            if provider.strip() != "openai":
                raise InvalidInputError(f"the {provider} embedder has one model; give --to {provider}",
                                        hint="only openai takes a model name: --to openai:text-embedding-3-large")
            changes["embedding_model"] = model.strip()
    if dimensions is not None:
        if not 1 <= dimensions <= 4000:
            raise InvalidInputError("--dimensions must be from 1 to 4000 (pgvector's halfvec)")
        changes["embedding_dimensions"] = dimensions
    return get_embedder(config.replace(**changes) if changes else config)


@dataclass
class Migrated:
    store: str
    target: str  # provider:model (dim dims)
    dry_run: bool
    rows: dict[str, int] = field(default_factory=dict)  # rows per table that lacked a vector in the target
    texts: int = 0  # distinct texts to embed (or embedded)
    tokens: int = 0  # their tokens (stored counts)
    computed: int = 0  # vectors computed now
    cached: int = 0  # vectors the target space already had for another store or row
    skipped: int = 0  # rows whose stored hash does not match their text (left alone)


def _texts_sql(kind: str) -> str:
    """Each kind's rows lacking a vector in the space, with what its stored embed_hash was computed from."""
    lacks = ("x.store_id = :s AND x.embed_hash IS NOT NULL AND x.id > :after AND NOT EXISTS (SELECT 1 FROM "
             "embeddings e WHERE e.space_id = :sp AND e.content_hash = x.embed_hash)")
    columns = {"docs": "x.heading, x.text", "history": "x.role, x.name, x.content, x.tool_name, x.tool_args, "
               "x.tool_result", "notes": "x.text, x.about"}[kind]
    return (f"SELECT x.id, x.embed_hash, {columns} FROM {TABLES[kind][0]} x WHERE {lacks} "
            f"ORDER BY x.id LIMIT :n")


def _embed_text(kind: str, row: Any) -> str:
    """The text a row's embed_hash was computed from, built by the function that built it at write time."""
    if kind == "docs":
        from ltm_cli.chunking import Chunk

        return Chunk(ordinal=0, text=row.text, heading=row.heading).embed_text
    if kind == "notes":
        from ltm_cli.services.notes import embed_body

        return embed_body(row.text, row.about)
    from ltm_cli.conversations import NewMessage, embed_text

    return embed_text(NewMessage(row.role, row.content, row.name, row.tool_name, row.tool_args, row.tool_result))


def _plan(conn: Connection, sid: int, space: int | None, result: Migrated) -> None:
    """Dry run: rows, distinct texts and their tokens that the target space lacks."""
    from sqlalchemy import text

    lacks = "" if space is None else (f" AND NOT EXISTS (SELECT 1 FROM embeddings e WHERE e.space_id = {int(space)} "
                                      "AND e.content_hash = x.embed_hash)")
    parts = [f"SELECT '{name}' AS kind, x.embed_hash, x.token_count FROM {table} x "
             f"WHERE x.store_id = :s AND x.embed_hash IS NOT NULL{lacks}" for table, name in TABLES.values()]
    row = conn.execute(text(
        f"WITH t AS ({' UNION ALL '.join(parts)}), d AS (SELECT DISTINCT ON (embed_hash) token_count FROM t) "
        "SELECT (SELECT coalesce(jsonb_object_agg(kind, n), '{}') FROM (SELECT kind, count(*) AS n FROM t "
        "GROUP BY kind) k) AS rows, (SELECT count(*) FROM d) AS texts, "
        "(SELECT coalesce(sum(token_count), 0) FROM d) AS tokens"), {"s": sid}).one()
    result.rows = {name: int(row.rows.get(name, 0)) for _, name in TABLES.values()}
    result.texts, result.tokens = int(row.texts), int(row.tokens)


def migrate(db: Database, embedder: Embedder, store: StoreRef, *, dry_run: bool = False,
            batch: int = EMBED_BATCH, progress: Progress | None = None) -> Migrated:
    """Embed every chunk, message and note of the store that has no vector in `embedder`'s space.

    Batch by batch, each committed (embed_and_cache): killed half-way, a re-run continues where it stopped.
    Rows are not touched, only the shared cache grows, so searches keep using their own space meanwhile."""
    from sqlalchemy import text

    tick = progress or no_progress
    result = Migrated(store.name, _label(embedder), dry_run, {name: 0 for _, name in TABLES.values()})
    with db.connect() as conn:
        sid = store.id(conn, create=False)
        space = vectors.find_space(conn, embedder.provider, embedder.model, embedder.dim)
        if sid is not None and dry_run:
            _plan(conn, sid, space, result)
    if sid is None or dry_run:
        return result
    space = space_of(db, embedder)
    with db.writing():  # `ltm db gc` waits: a vector written here is used by a row only once all are written
        for kind, (_, name) in TABLES.items():
            after = 0
            while True:
                with db.connect() as conn:
                    rows = conn.execute(text(_texts_sql(kind)),
                                        {"s": sid, "sp": space, "after": after, "n": batch}).all()
                if not rows:
                    break
                after = rows[-1].id
                texts: dict[bytes, str] = {}
                for row in rows:
                    body, stated = _embed_text(kind, row), bytes(row.embed_hash)
                    if content_hash(body) != stated:
                        result.skipped += 1
                        continue
                    texts.setdefault(stated, body)
                result.rows[name] += len(rows)
                done = embed_and_cache(db, embedder, space, texts, batch=batch)
                result.computed += done.computed
                result.cached += done.cached
                result.texts += len(texts)
                tick("migrated", {"kind": name, "rows": len(rows), "computed": done.computed})
        with db.connect() as conn:
            vectors.ensure_index(conn, space, embedder.dim)
    return result


# -- the store's active space ----------------------------------------------------------------------------
SPACE_KEY = "embedding.space"  # per-store setting {"provider", "model", "dim"}: versioned, so switches have history


def space_value(embedder: Embedder) -> dict[str, Any]:
    return {"provider": embedder.provider, "model": embedder.model, "dim": int(embedder.dim)}


def _value_label(value: dict[str, Any]) -> str:
    return f"{value['provider']}:{value['model']} ({value['dim']} dims)"


def embedder_of(config: Config, value: dict[str, Any]) -> Embedder:
    """The registry's embedder for a stored space, from the configuration with provider, model and dim replaced
    (only openai takes a model name; the local model has one size)."""
    from ltm_cli.embedders import get_embedder
    from ltm_cli.errors import ConfigError

    provider = value.get("provider")
    changes: dict[str, Any] = {"embedder": provider}
    if provider == "openai":
        changes["embedding_model"] = value.get("model")
    changes["embedding_dimensions"] = None if provider == "local" else value.get("dim")
    built = get_embedder(config.replace(**changes))
    if (built.provider, built.model) != (provider, value.get("model")):
        raise ConfigError(f"the store's embedding space {_value_label(value)} cannot be built: this ltm's "
                          f"{provider} embedder is {built.provider}:{built.model}",
                          hint="run `ltm embed switch --back`, or `ltm embed switch` to the configured embedder")
    return built


def store_embedder(db: Database, config: Config, store: StoreRef) -> tuple[Embedder, str]:
    """The embedder of the store's active space and why: its `embedding.space` setting when set (it wins over
    the configured embedder, so every process searches the space the store was switched to), else the
    configuration's."""
    from ltm_cli.embedders import get_embedder
    from ltm_cli.services import settings

    current = next((v for v in settings.list_active(db, store, SPACE_KEY) if v.key == SPACE_KEY), None)
    if current is None or not isinstance(current.value, dict):
        return get_embedder(config), "configuration (LTM_EMBEDDER / config file)"
    by = f" by {current.author}" if current.author else ""
    why = f"store setting {SPACE_KEY} (version {current.version}{by}, {current.created_at:%Y-%m-%d %H:%M})"
    if config.embedder and config.embedder != current.value.get("provider"):
        why += f"; it overrides the configured embedder {config.embedder}"
    return embedder_of(config, current.value), why


def migrate_command(embedder: Embedder, store: StoreRef) -> str:
    """The command that embeds the store's rows into `embedder`'s space."""
    to = embedder.provider + (f":{embedder.model}" if embedder.provider == "openai" else "")
    dims = f" --dimensions {embedder.dim}" if embedder.provider != "local" else ""
    return f"ltm embed migrate --to {to}{dims}" + (f" --store {store.name}" if store.name != "default" else "")


def lacking(conn: Connection, sid: int | None, space: int | None) -> dict[str, int]:
    """Per table: the store's rows without a vector in `space` (all of them when the space does not exist)."""
    from sqlalchemy import text

    counts = {name: 0 for _, name in TABLES.values()}
    if sid is None:
        return counts
    for table, name in TABLES.values():
        lacks = "" if space is None else (" AND NOT EXISTS (SELECT 1 FROM embeddings e WHERE e.space_id = :sp "
                                          "AND e.content_hash = x.embed_hash)")
        counts[name] = conn.execute(text(f"SELECT count(*) FROM {table} x WHERE x.store_id = :s "
                                         f"AND x.embed_hash IS NOT NULL{lacks}"), {"s": sid, "sp": space}).scalar()
    return counts


@dataclass(frozen=True)
class Switched:
    store: str
    space: str  # provider:model (dim dims) now active
    value: dict[str, Any] | None  # the setting's value; None when the store went back to the configured embedder
    version: int | None
    changed: bool
    lacking: dict[str, int] = field(default_factory=dict)  # rows without a vector there (only with --force)


def _check_vectors(db: Database, embedder: Embedder, store: StoreRef, force: bool) -> dict[str, int]:
    from ltm_cli.errors import ConflictError

    with db.connect() as conn:
        sid = store.id(conn, create=False)
        space = vectors.find_space(conn, embedder.provider, embedder.model, embedder.dim)
        counts = lacking(conn, sid, space)
        if space is not None and not force:
            vectors.ensure_index(conn, space, embedder.dim)
    n = sum(counts.values())
    if n and not force:
        detail = ", ".join(f"{k} {name}" for name, k in counts.items() if k)
        raise ConflictError(f"{n} row(s) of store {store.name} ({detail}) have no vector in {_label(embedder)}: "
                            "search would find them by keyword only; nothing switched",
                            hint=f"run `{migrate_command(embedder, store)}` first, or add --force")
    return counts


def switch(db: Database, embedder: Embedder, store: StoreRef, *, force: bool = False, note: str | None = None,
           author: str | None = None) -> Switched:
    """Make `embedder`'s space the store's active one: one new version of the `embedding.space` setting.
    ConflictError (with the count) when rows of the store lack a vector there, unless `force`."""
    from ltm_cli.services import settings

    counts = _check_vectors(db, embedder, store, force)
    value = space_value(embedder)
    done = settings.set_value(db, store, SPACE_KEY, value, note=note or f"switch to {_label(embedder)}",
                              author=author)
    return Switched(store.name, _label(embedder), value, done.version, done.changed, counts)


def switch_back(db: Database, config: Config, store: StoreRef, *, force: bool = False, note: str | None = None,
                author: str | None = None) -> Switched:
    """Return to the space active before the last switch (a settings revert; the configured embedder when the
    store had no `embedding.space` before), with the same check as `switch`."""
    from ltm_cli.embedders import get_embedder
    from ltm_cli.errors import NotFoundError
    from ltm_cli.services import settings

    try:
        versions = [v for v in settings.history(db, store, SPACE_KEY) if v.key == SPACE_KEY]
    except NotFoundError:
        versions = []
    if not versions or (versions[-1].deleted and len(versions) < 2):
        raise NotFoundError(f"store {store.name} was never switched: nothing to go back to")
    before = versions[-2] if len(versions) >= 2 else None
    if before is None or before.deleted:
        target = get_embedder(config)
        counts = _check_vectors(db, target, store, force)
        note = note or f"switch back to the configured embedder {_label(target)}"
        if versions[-1].deleted:
            return Switched(store.name, _label(target), None, None, False, counts)
        if before is None:
            settings.unset(db, store, SPACE_KEY, note=note, author=author)
            return Switched(store.name, _label(target), None, None, True, counts)
        done = settings.revert(db, store, SPACE_KEY, note=note, author=author)
        return Switched(store.name, _label(target), None, done.version, True, counts)
    target = embedder_of(config, before.value)
    counts = _check_vectors(db, target, store, force)
    done = settings.revert(db, store, SPACE_KEY, note=note or f"switch back to {_label(target)}", author=author)
    return Switched(store.name, _label(target), done.value, done.version, True, counts)


# -- drop ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dropped:
    space_id: int
    space: str  # provider:model (dim dims)
    vectors: int
    index: bool  # whether an HNSW index was dropped


def _store_spaces(conn: Connection) -> tuple[dict[tuple[str, str, int], list[str]], list[str]]:
    """(provider, model, dim) -> the stores pinned to it by their embedding.space setting; and the stores with
    no such setting, which search whatever embedder the configuration of whoever runs ltm names."""
    from sqlalchemy import text

    rows = conn.execute(text(
        "SELECT s.name, a.value, a.deleted FROM stores s LEFT JOIN LATERAL (SELECT value, deleted FROM settings "
        "WHERE store_id = s.id AND key = :k ORDER BY version DESC LIMIT 1) a ON true"), {"k": SPACE_KEY}).all()
    pinned: dict[tuple[str, str, int], list[str]] = {}
    for r in rows:
        if r.value is not None and not r.deleted:
            pinned.setdefault((r.value["provider"], r.value["model"], int(r.value["dim"])), []).append(r.name)
    return pinned, [r.name for r in rows if r.value is None or r.deleted]


def _active_spaces(pinned: dict[tuple[str, str, int], list[str]], unpinned: list[str],
                   config: Config) -> dict[tuple[str, str, int], list[str]]:
    """(provider, model, dim) -> the stores it is active for: by their setting, or as the configured embedder
    for stores that have none."""
    found = {space: list(names) for space, names in pinned.items()}
    try:
        from ltm_cli.embedders import get_embedder

        configured = get_embedder(config)
        found.setdefault((configured.provider, configured.model, configured.dim), []).extend(unpinned or ["(new)"])
    except Exception:  # noqa: BLE001 - a configured embedder that cannot be built protects no space
        pass
    return found


def _sole_space_of(conn: Connection, stores: list[str], space_id: int) -> list[str]:
    """Of these stores (the unpinned ones), those whose only vectors are in this space. Which space such a store
    searches depends on the configuration of whoever runs ltm (LTM_EMBEDDER): with another embedder
    configured, this space would not count as active, and dropping it would leave the store with no vectors."""
    from sqlalchemy import text

    if not stores:
        return []

    def has(where: str) -> str:
        return " OR ".join(f"EXISTS (SELECT 1 FROM {table} x JOIN embeddings e ON e.content_hash = x.embed_hash "
                           f"AND {where} WHERE x.store_id = s.id)" for table in ("chunks", "messages", "notes"))

    return list(conn.execute(text(
        f"SELECT s.name FROM stores s WHERE s.name = ANY(:names) AND ({has('e.space_id = :sp')}) "
        f"AND NOT ({has('e.space_id <> :sp')}) ORDER BY s.name"), {"names": stores, "sp": space_id}).scalars())


def find_droppable(db: Database, config: Config, ref: str, dimensions: int | None = None) -> Dropped:
    """The space named by `ref` (an id, or PROVIDER:MODEL with `dimensions` when several sizes exist) with its
    vector count. ConflictError when it is the active space of any store."""
    from sqlalchemy import text

    from ltm_cli.errors import ConflictError, InvalidInputError, NotFoundError

    with db.connect() as conn:
        if ref.strip().isdigit():
            rows = conn.execute(text("SELECT id, provider, model, dim FROM embedding_spaces WHERE id = :i"),
                                {"i": int(ref)}).all()
        else:
            provider, _, model = ref.partition(":")
            rows = conn.execute(text(
                "SELECT id, provider, model, dim FROM embedding_spaces WHERE provider = :p "
                "AND (:m = '' OR model = :m) AND (CAST(:d AS int) IS NULL OR dim = :d) ORDER BY id"),
                {"p": provider.strip(), "m": model.strip(), "d": dimensions}).all()
        if not rows:
            raise NotFoundError(f"no embedding space {ref}" + (f" with {dimensions} dims" if dimensions else ""),
                                hint="`ltm embed status` lists the spaces with their ids")
        if len(rows) > 1:
            raise InvalidInputError(f"{ref} names {len(rows)} spaces: "
                                    + ", ".join(f"{r.id} ({r.dim} dims)" for r in rows),
                                    hint="give the space id, or --dimensions")
        row = rows[0]
        label = f"{row.provider}:{row.model} ({row.dim} dims)"
        pinned, unpinned = _store_spaces(conn)
        users = _active_spaces(pinned, unpinned, config).get((row.provider, row.model, row.dim))
        if users:
            raise ConflictError(f"space {row.id}, {label}, is the active space of store(s) {', '.join(users)}",
                                hint="switch those stores to another space first (`ltm embed switch`)")
        sole = _sole_space_of(conn, unpinned, row.id)
        if sole:
            raise ConflictError(f"space {row.id}, {label}, holds the only vectors of store(s) "
                                f"{', '.join(sole)}, which search whatever embedder the configuration names",
                                hint="pin each to its space first (`ltm embed switch PROVIDER[:MODEL] -s STORE`)")
        count = conn.execute(text("SELECT count(*) FROM embeddings WHERE space_id = :i"), {"i": row.id}).scalar()
        return Dropped(row.id, label, int(count), vectors.has_index(conn, row.id))


def drop(db: Database, space: Dropped) -> Dropped:
    """Delete a space: its HNSW index, its vectors (ON DELETE CASCADE) and its row."""
    from sqlalchemy import text

    with db.writing(), db.connect() as conn:
        vectors.drop_index(conn, space.space_id)
        conn.execute(text("DELETE FROM embedding_spaces WHERE id = :i"), {"i": space.space_id})
    return space
