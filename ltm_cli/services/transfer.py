"""Export and import of a whole store as one portable, versioned JSON Lines stream (issue #13)."""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import hashlib
import io
import json
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from ltm_cli.errors import InvalidInputError
from ltm_cli.parsing import atomic_output
from ltm_cli.services.embedding import checked, content_hash
from ltm_cli.storage import vectors
from ltm_cli.storage.stores import StoreRef

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from ltm_cli.embedders.base import Embedder
    from ltm_cli.storage.engine import Database

FORMAT = "ltm-export"
FORMAT_VERSION = 1
PARTS = ("settings", "history", "docs", "notes")
PROBE_TEXT = "ltm export probe: how do I reset the device to factory settings?"
BULK_CHUNKS = 1000  # as in ingest: past this many chunks the space's HNSW index is dropped and rebuilt at the end
SETTINGS_BATCH = 500
GROUP_DOCUMENTS = 200  # documents written in one transaction (each under its own SAVEPOINT when one fails)
GROUP_CHUNKS = 4000  # ... or fewer, when they hold this many chunks: bounds the memory a group holds
STREAM_ROWS = 1000  # rows fetched per round trip from the server-side cursor


# -- fingerprints --------------------------------------------------------------------------------------
def probe_checksum(embedder: Embedder) -> str:
    """A checksum of the embedder's vector of a fixed text. Quantised to 1/100 of the largest component
    first, so the last-bit noise of a float16 round trip or another CPU does not change it, while another
    model (or another version of one) does."""
    import numpy as np

    vector = checked(embedder, embedder.embed([PROBE_TEXT]), 1)[0].astype(np.float32)
    scale = float(np.abs(vector).max()) or 1.0
    quantised = np.round(vector / scale * 100).astype("<i1")
    return hashlib.sha256(quantised.tobytes()).hexdigest()[:16]


def _same_model(space: dict[str, Any], embedder: Embedder) -> bool:
    return (space.get("provider"), space.get("model"), space.get("dim")) == \
        (embedder.provider, embedder.model, embedder.dim)


# -- vectors as text -------------------------------------------------------------------------------------
def _encode_vector(raw: bytes | memoryview) -> str:
    """halfvec_send's bytes (int16 dim, int16 unused, big-endian float16s) as base64 of little-endian ones."""
    import numpy as np

    return base64.b64encode(np.frombuffer(bytes(raw)[4:], dtype=">f2").astype("<f2").tobytes()).decode("ascii")


def _decode_vectors(encoded: Sequence[str], dim: int) -> Any:
    import numpy as np

    data = b"".join(base64.b64decode(v, validate=True) for v in encoded)
    if len(data) != len(encoded) * dim * 2:
        raise ValueError(f"a vector is not {dim} float16 values")
    return np.frombuffer(data, dtype="<f2").reshape(len(encoded), dim)


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _time(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    parsed = dt.datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


# -- export ----------------------------------------------------------------------------------------------
@dataclass
class ExportSummary:
    path: str
    records: dict[str, int] = field(default_factory=dict)
    vectors: int = 0
    spaces: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def check_parts(only: Sequence[str] | None) -> tuple[str, ...]:
    if not only:
        return PARTS
    unknown = sorted(set(only) - set(PARTS))
    if unknown:
        raise InvalidInputError(f"unknown part(s) {', '.join(unknown)} for --only",
                                hint=f"choose from {', '.join(PARTS)}")
    return tuple(p for p in PARTS if p in only)


def _spaces(conn: Connection, sid: int, parts: Sequence[str]) -> list[dict[str, Any]]:
    """The embedding spaces holding a vector of anything exported."""
    from sqlalchemy import text

    tables = [t for p, t in (("history", "messages"), ("docs", "chunks"), ("notes", "notes")) if p in parts]
    out = []
    for space in conn.execute(text("SELECT id, provider, model, dim FROM embedding_spaces ORDER BY id")).mappings():
        if any(conn.execute(text(f"SELECT EXISTS (SELECT 1 FROM {t} x JOIN embeddings e ON e.space_id = :sp AND "
                                 "e.content_hash = x.embed_hash WHERE x.store_id = :s)"),
                            {"sp": space["id"], "s": sid}).scalar() for t in tables):
            out.append(dict(space))
    return out


def _vector_columns(spaces: Sequence[dict[str, Any]], alias: str) -> tuple[str, str]:
    """Extra SELECT columns and LEFT JOINs that bring each space's vector of `alias`.embed_hash."""
    columns = "".join(f", halfvec_send(v{i}.embedding) AS v{i}" for i in range(len(spaces)))
    joins = " ".join(f"LEFT JOIN embeddings v{i} ON v{i}.space_id = {int(s['id'])} AND "
                     f"v{i}.content_hash = {alias}.embed_hash" for i, s in enumerate(spaces))
    return columns, joins


def _vectors_of(row: Any, count: int) -> dict[str, str]:
    return {str(i + 1): _encode_vector(row[f"v{i}"]) for i in range(count) if row[f"v{i}"] is not None}


def _stream(conn: Connection, sql: str, params: dict[str, Any]) -> Iterator[Any]:
    from sqlalchemy import text

    yield from conn.execute(text(sql).execution_options(stream_results=True, yield_per=STREAM_ROWS),
                            params).mappings()


def export_records(db: Database, store: StoreRef, embedder: Callable[[], Embedder], *, with_vectors: bool = False,
                   only: Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
    """The header, then every record of the store, read in one REPEATABLE READ snapshot through server-side
    cursors: memory holds one conversation or one document at a time, whatever the store's size."""
    from sqlalchemy import text

    from ltm_cli import __version__
    from ltm_cli.errors import NotFoundError
    from ltm_cli.storage.engine import SCHEMA_HEAD

    parts = check_parts(only)
    with db.connect() as conn:
        conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
        sid = store.id(conn, create=False)
        if sid is None:
            raise NotFoundError(f"no store {store.name!r}", hint="`ltm db status` lists the stores")
        spaces = _spaces(conn, sid, parts)
        header_spaces = []
        for label, space in enumerate(spaces, 1):
            entry = {"id": str(label), "provider": space["provider"], "model": space["model"], "dim": space["dim"]}
            current = embedder()
            if _same_model(entry, current):
                entry["probe"] = probe_checksum(current)
            header_spaces.append(entry)
        yield {"type": "header", "format": FORMAT, "format_version": FORMAT_VERSION, "ltm_version": __version__,
               "schema": SCHEMA_HEAD, "store": store.name, "exported_at": _iso(dt.datetime.now(dt.UTC)),
               "parts": list(parts), "vectors": with_vectors, "spaces": header_spaces}
        live = spaces if with_vectors else []
        params = {"s": sid}
        if "settings" in parts:
            for r in _stream(conn, "SELECT key, version, value, deleted, note, author, created_at FROM settings "
                                   "WHERE store_id = :s ORDER BY key, version", params):
                yield {"type": "setting", **r, "created_at": _iso(r["created_at"])}
        if "history" in parts:
            yield from _export_conversations(conn, sid, live)
        if "docs" in parts:
            yield from _export_documents(conn, sid, live)
        if "notes" in parts:
            yield from _export_notes(conn, sid, live)


def _export_conversations(conn: Connection, sid: int, spaces: Sequence[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    columns, joins = _vector_columns(spaces, "m")
    current: dict[str, Any] | None = None
    for r in _stream(conn, "SELECT coalesce(c.external_id, c.id::text) AS cid, c.title, c.metadata AS cmeta, "
                           "m.seq, m.role, m.name, m.content, m.tool_name, m.tool_args, m.tool_result, m.outcome, "
                           "m.outcome_note, m.metadata, m.created_at, m.distilled_at, m.embed_hash, m.token_count"
                           f"{columns} FROM conversations c JOIN messages m ON m.conversation_id = c.id {joins} "
                           "WHERE c.store_id = :s ORDER BY c.updated_at, c.id, m.seq", {"s": sid}):
        if current is None or current["id"] != r["cid"]:
            if current is not None:
                yield current
            current = {"type": "conversation", "id": r["cid"], "title": r["title"], "metadata": r["cmeta"],
                       "messages": []}
        message = {k: r[k] for k in ("seq", "role", "name", "content", "tool_name", "tool_args", "tool_result",
                                     "outcome", "outcome_note", "metadata", "token_count")}
        message.update(created_at=_iso(r["created_at"]), distilled_at=_iso(r["distilled_at"]),
                       embed_hash=bytes(r["embed_hash"]).hex() if r["embed_hash"] is not None else None)
        if spaces:
            message["vectors"] = _vectors_of(r, len(spaces))
        current["messages"].append(message)
    if current is not None:
        yield current


def _export_documents(conn: Connection, sid: int, spaces: Sequence[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    columns, joins = _vector_columns(spaces, "c")
    current: dict[str, Any] | None = None
    for r in _stream(conn, "SELECT d.id AS did, d.source, d.content_hash, d.media_type, d.title, "
                           "d.metadata AS dmeta, d.tags, d.created_at, d.updated_at, c.ordinal, c.heading, c.text, "
                           f"c.location, c.token_count, c.embed_hash{columns} FROM documents d "
                           f"LEFT JOIN chunks c ON c.document_id = d.id {joins} "
                           "WHERE d.store_id = :s ORDER BY d.id, c.ordinal", {"s": sid}):
        if current is None or current["_id"] != r["did"]:
            if current is not None:
                current.pop("_id")
                yield current
            current = {"type": "document", "_id": r["did"], "source": r["source"],
                       "content_hash": bytes(r["content_hash"]).hex(), "media_type": r["media_type"],
                       "title": r["title"], "metadata": r["dmeta"], "tags": list(r["tags"]),
                       "created_at": _iso(r["created_at"]), "updated_at": _iso(r["updated_at"]), "chunks": []}
        if r["ordinal"] is None:
            continue
        chunk = {"ordinal": r["ordinal"], "heading": r["heading"], "text": r["text"], "location": r["location"],
                 "token_count": r["token_count"], "embed_hash": bytes(r["embed_hash"]).hex()}
        if spaces:
            chunk["vectors"] = _vectors_of(r, len(spaces))
        current["chunks"].append(chunk)
    if current is not None:
        current.pop("_id")
        yield current


def _export_notes(conn: Connection, sid: int, spaces: Sequence[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Sources travel as what names them in any store: (conversation id, seq) for a turn, the source of a
    document; ids do not survive an import."""
    columns, joins = _vector_columns(spaces, "n")
    for r in _stream(conn, "SELECT n.id, n.text, n.about, n.tags, n.metadata, n.author, n.created_at, n.valid_until, "
                           "n.superseded_by, n.closed_reason, n.embed_hash, n.token_count, "
                           "(SELECT coalesce(jsonb_agg(jsonb_build_array(coalesce(c.external_id, c.id::text), m.seq) "
                           " ORDER BY m.id), '[]') FROM messages m JOIN conversations c ON c.id = m.conversation_id "
                           " WHERE m.id = ANY(n.source_messages)) AS smsg, "
                           "(SELECT coalesce(jsonb_agg(d.source ORDER BY d.id), '[]') FROM documents d "
                           " WHERE d.id = ANY(n.source_documents)) AS sdoc"
                           f"{columns} FROM notes n {joins} WHERE n.store_id = :s ORDER BY n.id", {"s": sid}):
        note = {"type": "note", "id": r["id"], "text": r["text"], "about": r["about"], "tags": list(r["tags"]),
                "metadata": r["metadata"], "sources": {"messages": r["smsg"], "documents": r["sdoc"]},
                "author": r["author"], "created_at": _iso(r["created_at"]), "valid_until": _iso(r["valid_until"]),
                "superseded_by": r["superseded_by"], "closed_reason": r["closed_reason"],
                "token_count": r["token_count"], "embed_hash": bytes(r["embed_hash"]).hex()}
        if spaces:
            note["vectors"] = _vectors_of(r, len(spaces))
        yield note


def export_store(db: Database, store: StoreRef, embedder: Callable[[], Embedder], path: str, *,
                 with_vectors: bool = False, only: Sequence[str] | None = None,
                 stdout: IO[bytes] | None = None) -> ExportSummary:
    """Write the export to `path` ("-": `stdout`), gzip when it ends in .gz. A file appears only complete:
    it is written beside its destination and renamed into place."""
    started = time.perf_counter()
    summary = ExportSummary(path)
    records = export_records(db, store, embedder, with_vectors=with_vectors, only=only)
    if path == "-":
        _write(records, stdout, summary)
    else:
        with atomic_output(path) as raw:
            if str(path).endswith(".gz"):
                with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as zipped:
                    _write(records, zipped, summary)
            else:
                _write(records, raw, summary)
    summary.seconds = time.perf_counter() - started
    return summary


def _write(records: Iterable[dict[str, Any]], out: IO[bytes], summary: ExportSummary) -> None:
    buffered = io.BufferedWriter(out, buffer_size=1 << 20) if not isinstance(out, io.BufferedIOBase) else out
    for record in records:
        kind = record["type"]
        if kind == "header":
            summary.spaces = record["spaces"]
        else:
            summary.records[kind] = summary.records.get(kind, 0) + 1
            summary.vectors += sum(len(x.get("vectors", {})) for x in
                                   record.get("chunks", record.get("messages", [record])))
        buffered.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n")
    buffered.flush()
    count = sum(summary.records.values())
    buffered.write(json.dumps({"type": "end", "records": count}).encode("utf-8") + b"\n")
    buffered.flush()


# -- import ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _PendingDocument:
    """A checked document record waiting for its group's transaction."""
    line: int
    source: str
    digest: bytes
    record: dict[str, Any]
    chunks: list[Any]  # ltm_cli.chunking.Chunk
    hashes: list[bytes]


@dataclass
class ImportSummary:
    added: dict[str, int] = field(default_factory=dict)
    unchanged: dict[str, int] = field(default_factory=dict)
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    problems: list[dict[str, Any]] = field(default_factory=list)  # {"line": n, "message": ...}
    vectors_reused: int = 0
    vectors_computed: int = 0
    vectors_stored: int = 0  # needed, and already in the database's cache (an import into the same server)
    vector_source: str = ""  # how the target embedder's vectors were obtained, in words
    chunks: int = 0
    seconds: float = 0.0
    dry_run: bool = False
    complete: bool = False  # the file's end marker was read

    def bump(self, status: str, kind: str, n: int = 1) -> None:
        counts = self.added if status == "added" else self.unchanged
        counts[kind] = counts.get(kind, 0) + n

    @property
    def failed(self) -> bool:
        return bool(self.problems or self.conflicts)


class UnreadableInputError(InvalidInputError):
    """The input cannot be read on past some point: its gzip data is cut short or corrupt. Raised before
    the first line, it is unreadable input (exit 4); later, the importer keeps what it read (see Importer._run)."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message, hint="export it again with `ltm export -o FILE`, or use an intact copy")
        self.reason = reason


def _gzip_damage(exc: BaseException) -> str:
    if isinstance(exc, EOFError):
        return "its gzip data ends before the end-of-stream marker"
    if isinstance(exc, zlib.error):
        return f"its gzip data is corrupt ({exc})"
    return f"it is not valid gzip ({exc})"


def open_lines(path: str, stdin: IO[bytes] | None = None) -> Iterator[bytes]:
    """The file's lines as bytes, streamed; gzip recognised by its magic bytes, whatever the name. Damaged
    gzip raises UnreadableInputError; a line the damage cut in two is never yielded."""
    if path == "-":
        if stdin is None:
            raise InvalidInputError("standard input is not available here")
        raw: IO[bytes] = stdin
    else:
        try:
            raw = open(path, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise InvalidInputError(f"cannot read {path}: {exc.strerror}") from exc
    buffered = raw if hasattr(raw, "peek") else io.BufferedReader(raw)  # type: ignore[arg-type]
    try:
        stream = gzip.GzipFile(fileobj=buffered) if buffered.peek(2)[:2] == b"\x1f\x8b" else buffered
        try:
            yield from stream
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            reason = _gzip_damage(exc)
            name = "standard input" if path == "-" else path
            raise UnreadableInputError(f"cannot read {name}: {reason}", reason=reason) from exc
    finally:
        if path != "-":
            raw.close()


class Importer:
    """Reads an export line by line; each conversation, document and note is written in its own transaction,
    and re-importing a file adds nothing."""

    def __init__(self, db: Database, embedder: Embedder, store: StoreRef, *, dry_run: bool = False) -> None:
        self.db = db
        self.embedder = embedder
        self.store = store
        self.summary = ImportSummary(dry_run=dry_run)
        self.sid: int | None = None
        self.space = 0  # the embedder's space in the target
        self.reuse: str | None = None  # the file's label of the embedder's space, when its vectors are reused
        self.targets: dict[str, tuple[int, int]] = {}  # file label -> (target space id, dim) for vectors written
        self.note_ids: dict[int, int] = {}  # exported note id -> id in the target
        self.supersede: list[tuple[int, int]] = []  # (target note id, exported id of its successor)
        self.settings: list[tuple[int, dict[str, Any]]] = []
        self.chunks_written = 0
        self.bulk = False
        self.pending: list[_PendingDocument] = []  # checked documents not yet written (see _flush_documents)
        self.pending_chunks = 0

    def run(self, lines: Iterable[bytes]) -> ImportSummary:
        started = time.perf_counter()
        if self.summary.dry_run:
            self._run(lines)
        else:
            with self.db.writing():
                try:
                    self._run(lines)
                finally:
                    with self.db.connect() as conn:
                        vectors.ensure_index(conn, self.space, self.embedder.dim)
                    if self.summary.chunks >= BULK_CHUNKS:
                        self.db.analyze("chunks", "documents", "embeddings", "messages", "notes")
        self.summary.seconds = time.perf_counter() - started
        return self.summary

    def _run(self, lines: Iterable[bytes]) -> None:
        iterator = iter(lines)
        first = next(iterator, None)
        header = self._header(first)
        with self.db.connect() as conn:
            self.sid = self.store.id(conn, create=not self.summary.dry_run)
            self.space = vectors.ensure_space(conn, self.embedder.provider, self.embedder.model, self.embedder.dim)
            self._plan_vectors(conn, header.get("spaces") or [], bool(header.get("vectors")))
        number, damage = 1, None
        try:
            for number, raw in enumerate(iterator, 2):
                self._line(raw, number)
        except UnreadableInputError as exc:
            # The lines before the damage are whole records, imported as usual (the groups still queued are
            # flushed below); the line the damage cut in two never reached _line.
            damage = f"the file is truncated or corrupt after line {number}: {exc.reason}"
        self._flush_settings()
        self._flush_documents()
        self._link_notes()
        if damage is not None:
            self.summary.problems.append({"line": 0, "message": damage})
        elif not self.summary.complete:
            self.summary.problems.append({"line": 0, "message": "the file ends without its end marker "
                                                                "(truncated?): what it holds was imported"})

    def _line(self, raw: bytes, number: int) -> None:
        """One line: its record imported, or a damaged one reported under its number."""
        if not raw.strip():
            return
        try:
            record = json.loads(raw)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
            self._record(record, number)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            detail = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            self.summary.problems.append({"line": number, "message": f"damaged record: {detail}"})
        except InvalidInputError as exc:
            self.summary.problems.append({"line": number, "message": exc.message})

    def _header(self, first: bytes | None) -> dict[str, Any]:
        try:
            header = json.loads(first) if first else None
        except ValueError:
            header = None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise InvalidInputError("not an ltm export (its first line is not an ltm-export header)",
                                    hint="make one with `ltm export -o FILE`")
        if header.get("format_version") != FORMAT_VERSION:
            raise InvalidInputError(f"export format version {header.get('format_version')} is not supported "
                                    f"(this ltm reads version {FORMAT_VERSION})", hint="use a matching ltm version")
        return header

    def _plan_vectors(self, conn: Connection, spaces: Sequence[dict[str, Any]], has_vectors: bool) -> None:
        """Every space's vectors in the file are kept (content-addressed, so harmless); those of the target's
        embedder are used only when provider, model, dimension and the probe checksum agree."""
        name = f"{self.embedder.provider}/{self.embedder.model} ({self.embedder.dim})"
        why = "the file has no vectors" if not has_vectors else f"the file has no vectors of {name}"
        for space in spaces:
            label = str(space["id"])
            if _same_model(space, self.embedder):
                if space.get("probe") and space["probe"] != probe_checksum(self.embedder):
                    why = f"the file's vectors of {name} were made by a different model version (probe differs)"
                    continue
                if has_vectors:
                    self.reuse = label
            if has_vectors and not self.summary.dry_run:
                target = vectors.ensure_space(conn, space["provider"], space["model"], int(space["dim"]))
                self.targets[label] = (target, int(space["dim"]))
        self.summary.vector_source = (f"reused from the file ({name})" if self.reuse
                                      else f"recomputed with {name}: {why}")

    def _record(self, record: dict[str, Any], line: int) -> None:
        kind = record.get("type")
        if kind != "setting":
            self._flush_settings()
        if kind != "document":
            self._flush_documents()  # notes name documents by source: they must be in first
        if kind == "setting":
            self.settings.append((line, record))
            if len(self.settings) >= SETTINGS_BATCH:
                self._flush_settings()
        elif kind == "conversation":
            self._conversation(record, line)
        elif kind == "document":
            self._document(record, line)
        elif kind == "note":
            self._note(record, line)
        elif kind == "end":
            self.summary.complete = True
        else:
            raise ValueError(f"unknown record type {kind!r}")

    # vectors ---------------------------------------------------------------------------------------------
    def _write_vectors(self, conn: Connection, items: Sequence[dict[str, Any]]) -> set[bytes]:
        """The file's vectors of these items, each space in one COPY; returns the hashes whose vector in the
        embedder's space came from the file."""
        reused: set[bytes] = set()
        for label, (space, dim) in self.targets.items():
            hashes, encoded = [], []
            for item in items:
                vector = (item.get("vectors") or {}).get(label)
                if vector is not None:
                    hashes.append(bytes.fromhex(item["embed_hash"]))
                    encoded.append(vector)
            if hashes:
                vectors.write(conn, space, hashes, _decode_vectors(encoded, dim))
                if label == self.reuse:
                    self.summary.vectors_reused += len(hashes)
                    reused.update(hashes)
        return reused

    def _embed_missing(self, conn: Connection, texts: dict[bytes, str]) -> None:
        """Vectors the target's embedder still lacks for these texts, computed now."""
        if not texts:
            return
        absent = vectors.missing(conn, self.space, list(texts))
        todo = [h for h in texts if h in absent]
        self.summary.vectors_stored += len(texts) - len(todo)
        if todo:
            matrix = checked(self.embedder, self.embedder.embed([texts[h] for h in todo]), len(todo))
            vectors.write(conn, self.space, todo, matrix)
            self.summary.vectors_computed += len(todo)

    # settings --------------------------------------------------------------------------------------------
    def _flush_settings(self) -> None:
        from sqlalchemy import text

        batch, self.settings = self.settings, []
        if not batch:
            return
        with self.db.connect() as conn:
            for line, r in batch:
                key, version = str(r["key"]), int(r["version"])
                value = json.dumps(r["value"], ensure_ascii=False)
                existing = None if self.sid is None else conn.execute(text(
                    "SELECT value = CAST(:v AS jsonb) AND deleted = :d AS same FROM settings "
                    "WHERE store_id = :s AND key = :k AND (version = :n OR (created_at = :c AND value = CAST(:v AS "
                    "jsonb))) ORDER BY version = :n DESC LIMIT 1"),
                    {"s": self.sid, "k": key, "n": version, "v": value, "d": bool(r.get("deleted")),
                     "c": _time(r["created_at"])}).first()
                if existing is not None:
                    if existing.same:
                        self.summary.bump("unchanged", "setting")
                    else:
                        self.summary.conflicts.append({"line": line, "kind": "setting", "key": key,
                                                       "message": f"version {version} of {key!r} differs here"})
                    continue
                if not self.summary.dry_run:
                    conn.execute(text(
                        "INSERT INTO settings (store_id, key, version, value, deleted, note, author, created_at) "
                        "VALUES (:s, :k, :n, CAST(:v AS jsonb), :d, :note, :a, :c)"),
                        {"s": self.sid, "k": key, "n": version, "v": value, "d": bool(r.get("deleted")),
                         "note": r.get("note"), "a": r.get("author"), "c": _time(r["created_at"])})
                self.summary.bump("added", "setting")

    # conversations ---------------------------------------------------------------------------------------
    def _conversation(self, r: dict[str, Any], line: int) -> None:
        from sqlalchemy import text

        from ltm_cli.conversations import NewConversation, NewMessage, check_message
        from ltm_cli.services import history

        messages = [check_message(NewMessage(
            role=m["role"], content=m.get("content") or "", name=m.get("name"), tool_name=m.get("tool_name"),
            tool_args=m.get("tool_args"), tool_result=m.get("tool_result"), outcome=m.get("outcome"),
            outcome_note=m.get("outcome_note"), metadata=dict(m.get("metadata") or {}),
            created_at=_time(m.get("created_at")))) for m in sorted(r["messages"], key=lambda m: int(m["seq"]))]
        conversation = NewConversation(messages, external_id=str(r["id"]), title=r.get("title"),
                                       metadata=dict(r.get("metadata") or {}), line=line)
        if self.summary.dry_run:
            with self.db.connect() as conn:
                found = self.sid is not None and history._find(conn, self.sid, conversation.key()) is not None
            self.summary.bump("unchanged" if found else "added", "conversation")
            return
        with self.db.connect() as conn:
            self._write_vectors(conn, r["messages"])
        done = history.import_conversations(self.db, self.embedder, self.store, [conversation])
        result = done.conversations[0]
        self.summary.vectors_computed += done.embedded
        if result.status == "conflict":
            self.summary.conflicts.append({"line": line, "kind": "conversation", "key": result.conversation_id,
                                           "message": result.error})
            return
        self.summary.bump("unchanged" if result.status == "unchanged" else "added", "conversation")
        if result.messages:
            self.summary.bump("added", "message", result.messages)
        distilled = [(int(m["seq"]), _time(m["distilled_at"])) for m in r["messages"] if m.get("distilled_at")]
        if distilled and result.messages:
            with self.db.connect() as conn:
                conn.execute(text(
                    "UPDATE messages m SET distilled_at = u.d FROM unnest(CAST(:q AS int[]), "
                    "CAST(:d AS timestamptz[])) AS u(q, d) WHERE m.conversation_id = (SELECT id FROM conversations "
                    "WHERE store_id = :s AND coalesce(external_id, id::text) = :k) AND m.seq = u.q "
                    "AND m.distilled_at IS NULL"),
                    {"q": [q for q, _ in distilled], "d": [d for _, d in distilled], "s": self.sid,
                     "k": result.conversation_id})

    # documents -------------------------------------------------------------------------------------------
    def _document(self, r: dict[str, Any], line: int) -> None:
        """Checks the record and queues it: documents are written in groups (see _flush_documents)."""
        from ltm_cli.chunking import Chunk

        source, digest = str(r["source"]), bytes.fromhex(r["content_hash"])
        chunks = [Chunk(int(c["ordinal"]), c["text"], c.get("heading"), dict(c.get("location") or {}),
                        int(c["token_count"])) for c in r["chunks"]]
        hashes = [bytes.fromhex(c["embed_hash"]) for c in r["chunks"]]
        for chunk, stated in zip(chunks, hashes, strict=True):
            if content_hash(chunk.embed_text) != stated:
                raise ValueError(f"chunk {chunk.ordinal} of {source}: its embed_hash does not match its text")
        for label, (_, dim) in self.targets.items():  # a damaged vector fails its own line, not the group
            _decode_vectors([v for c in r["chunks"] if (v := (c.get("vectors") or {}).get(label)) is not None], dim)
        self.pending.append(_PendingDocument(line, source, digest, r, chunks, hashes))
        self.pending_chunks += len(chunks)
        if len(self.pending) >= GROUP_DOCUMENTS or self.pending_chunks >= GROUP_CHUNKS:
            self._flush_documents()

    def _flush_documents(self) -> None:
        """The queued documents in one transaction: one query finds those already stored, and the new ones go
        in with one COPY of vectors and one of chunks. Should that fail (a concurrent writer, a value the
        server refuses), the group is rolled back and each document retried under its own SAVEPOINT, so every
        document stays all-or-nothing and a bad one is reported alone.

        The transaction commits with synchronous_commit off: a crash (kill -9, power loss) can lose the last
        few hundred milliseconds of commits, never corrupt anything, and re-running the same import restores
        them (it is idempotent). Waiting for the WAL flush of each commit is what that trade saves."""
        from sqlalchemy import bindparam, text
        from sqlalchemy.exc import DBAPIError

        batch, self.pending, self.pending_chunks = self.pending, [], 0
        if not batch:
            return
        with self.db.connect(durable=False) as conn:
            stored: dict[str, bytes] = {}
            if self.sid is not None:
                rows = conn.execute(text(
                    "SELECT source, content_hash FROM documents WHERE store_id = :s AND source IN :src "
                    "FOR UPDATE").bindparams(bindparam("src", expanding=True)),
                    {"s": self.sid, "src": sorted({d.source for d in batch})})
                stored = {r.source: bytes(r.content_hash) for r in rows}
            fresh = []
            for doc in batch:
                if doc.source in stored:
                    if stored[doc.source] == doc.digest:
                        self.summary.bump("unchanged", "document")
                    else:
                        self.summary.conflicts.append({"line": doc.line, "kind": "document", "key": doc.source,
                                                       "message": "a different version of this document is stored "
                                                                  "(docs rm it first to replace it)"})
                    continue
                stored[doc.source] = doc.digest  # the same source twice in one file: the first one wins
                fresh.append(doc)
            if self.summary.dry_run:
                for doc in fresh:
                    self.summary.bump("added", "document")
                    self.summary.chunks += len(doc.chunks)
                return
            count = sum(len(d.chunks) for d in fresh)
            if fresh and not self.bulk and self.chunks_written + count > BULK_CHUNKS:
                vectors.drop_index(conn, self.space)  # rebuilt once at the end (see run)
                self.bulk = True
            try:
                self._write_documents(conn, fresh)
            except (DBAPIError, ValueError):
                for doc in fresh:
                    try:
                        self._write_documents(conn, [doc])
                    except (DBAPIError, ValueError) as exc:
                        detail = str(getattr(exc, "orig", exc)).strip().splitlines()
                        self.summary.problems.append({"line": doc.line, "message": f"document {doc.source} not "
                                                      f"imported: {detail[0] if detail else exc}"})

    def _write_documents(self, conn: Connection, docs: Sequence[_PendingDocument]) -> None:
        """Writes these documents under one SAVEPOINT: all of them or, on any error, none (and it raises)."""
        from sqlalchemy import text

        from ltm_cli.storage.copy import copy_in, encode_rows

        if not docs:
            return
        reused_before, computed_before, stored_before = (self.summary.vectors_reused, self.summary.vectors_computed,
                                                         self.summary.vectors_stored)
        try:
            with conn.begin_nested():
                items = [c for d in docs for c in d.record["chunks"]]
                reused = self._write_vectors(conn, items)
                self._embed_missing(conn, {h: c.embed_text for d in docs for c, h in zip(d.chunks, d.hashes,
                                                                                         strict=True)
                                           if h not in reused})
                rows = []
                for d in docs:
                    r = d.record
                    doc_id = conn.execute(text(
                        "INSERT INTO documents (store_id, source, content_hash, media_type, title, metadata, tags, "
                        "created_at, updated_at) VALUES (:s, :src, :h, :mt, :t, CAST(:m AS jsonb), :tags, :c, :u) "
                        "RETURNING id"),
                        {"s": self.sid, "src": d.source, "h": d.digest, "mt": r["media_type"], "t": r.get("title"),
                         "m": json.dumps(r.get("metadata") or {}, ensure_ascii=False),
                         "tags": list(r.get("tags") or []), "c": _time(r["created_at"]),
                         "u": _time(r["updated_at"])}).scalar_one()
                    rows.extend((doc_id, self.sid, c.ordinal, c.heading, c.text, c.location, c.token_count, h)
                                for c, h in zip(d.chunks, d.hashes, strict=True))
                copy_in(conn, "chunks", ("document_id", "store_id", "ordinal", "heading", "text", "location",
                                         "token_count", "embed_hash"),
                        encode_rows(rows, ("int8", "int4", "int4", "text", "text", "jsonb", "int4", "bytea")))
        except BaseException:
            self.summary.vectors_reused, self.summary.vectors_computed, self.summary.vectors_stored = (
                reused_before, computed_before, stored_before)
            raise
        for d in docs:
            self.chunks_written += len(d.chunks)
            self.summary.chunks += len(d.chunks)
            self.summary.bump("added", "document")

    # notes -----------------------------------------------------------------------------------------------
    def _note(self, r: dict[str, Any], line: int) -> None:
        from sqlalchemy import text

        from ltm_cli.services.notes import embed_body

        body = embed_body(r["text"], r.get("about"))
        digest = bytes.fromhex(r["embed_hash"])
        if content_hash(body) != digest:
            raise ValueError(f"note {r.get('id')}: its embed_hash does not match its text")
        created = _time(r["created_at"])
        with self.db.connect() as conn:
            found = None if self.sid is None else conn.execute(text(
                "SELECT id FROM notes WHERE store_id = :s AND about IS NOT DISTINCT FROM CAST(:a AS text) "
                "AND text = :t AND created_at = :c"), {"s": self.sid, "a": r.get("about"), "t": r["text"],
                                                       "c": created}).scalar()
            if found is not None or self.summary.dry_run:
                self.summary.bump("unchanged" if found is not None else "added", "note")
                if found is not None:
                    self.note_ids[int(r["id"])] = found
                return
            if digest not in self._write_vectors(conn, [r]):
                self._embed_missing(conn, {digest: body})
            sources = r.get("sources") or {}
            messages = [conn.execute(text(
                "SELECT m.id FROM messages m JOIN conversations c ON c.id = m.conversation_id WHERE c.store_id = :s "
                "AND coalesce(c.external_id, c.id::text) = :k AND m.seq = :q"),
                {"s": self.sid, "k": str(k), "q": int(q)}).scalar() for k, q in sources.get("messages") or []]
            documents = [conn.execute(text("SELECT id FROM documents WHERE store_id = :s AND source = :src"),
                                      {"s": self.sid, "src": str(s)}).scalar() for s in sources.get("documents") or []]
            new_id = conn.execute(text(
                "INSERT INTO notes (store_id, text, about, tags, metadata, source_messages, source_documents, author, "
                "created_at, valid_until, closed_reason, embed_hash, token_count) VALUES (:s, :t, :a, :tags, "
                "CAST(:m AS jsonb), :msgs, :docs, :by, :c, :v, :why, :h, :n) RETURNING id"),
                {"s": self.sid, "t": r["text"], "a": r.get("about"), "tags": list(r.get("tags") or []),
                 "m": json.dumps(r.get("metadata") or {}, ensure_ascii=False),
                 "msgs": [m for m in messages if m is not None], "docs": [d for d in documents if d is not None],
                 "by": r.get("author"), "c": created, "v": _time(r.get("valid_until")),
                 "why": r.get("closed_reason"), "h": digest, "n": int(r.get("token_count") or 0)}).scalar_one()
        self.note_ids[int(r["id"])] = new_id
        if r.get("superseded_by") is not None:
            self.supersede.append((new_id, int(r["superseded_by"])))
        self.summary.bump("added", "note")

    def _link_notes(self) -> None:
        """A note's successor usually comes after it in the file, so the chain is linked once all are in."""
        from sqlalchemy import text

        pairs = [(old, self.note_ids[succ]) for old, succ in self.supersede if succ in self.note_ids]
        if not pairs or self.summary.dry_run:
            return
        with self.db.connect() as conn:
            conn.execute(text("UPDATE notes n SET superseded_by = u.b FROM unnest(CAST(:a AS bigint[]), "
                              "CAST(:b AS bigint[])) AS u(a, b) WHERE n.id = u.a AND n.store_id = :s"),
                         {"a": [a for a, _ in pairs], "b": [b for _, b in pairs], "s": self.sid})


def import_store(db: Database, embedder: Embedder, store: StoreRef, lines: Iterable[bytes], *,
                 dry_run: bool = False) -> ImportSummary:
    return Importer(db, embedder, store, dry_run=dry_run).run(lines)
