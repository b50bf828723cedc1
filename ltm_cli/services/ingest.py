"""Reference memory: files -> loaders -> chunks -> embeddings -> one transaction per document."""

from __future__ import annotations

import errno
import fnmatch
import glob
import os
import stat
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ltm_cli.chunking import Chunk, chunk_sections
from ltm_cli.errors import InvalidInputError
from ltm_cli.loaders import LoadError, LoadOptions, detect, load
from ltm_cli.services.embedding import Progress, content_hash, embed_and_cache
from ltm_cli.storage import vectors
from ltm_cli.storage.copy import copy_in, encode_rows
from ltm_cli.storage.stores import StoreRef

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from ltm_cli.config import Config
    from ltm_cli.embedders.base import Embedder
    from ltm_cli.storage.engine import Database

PIPELINE_VERSION = 3  # bump when loaders or chunking change what a file turns into
SKIP_DIRS = {".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv", "venv", ".tox", ".mypy_cache"}
BULK_CHUNKS = 1000  # once a run has written this many chunks, the rest load without the HNSW index (rebuilt
# at the end): inserting into HNSW runs at hundreds of rows/s, building it at thousands
ANALYZE_ROWS = 1000  # refresh planner statistics after writing this many chunks
EMBED_BATCH = 256  # texts gathered across documents before the embedder runs


@dataclass(frozen=True)
class Candidate:
    display: str  # as the user named it
    path: Path | None  # None for standard input
    source: str  # what the documents table keys on: absolute path, or stdin:<name>


@dataclass
class FileResult:
    source: str
    display: str
    status: str  # added, updated, unchanged, failed, skipped
    chunks: int = 0
    title: str | None = None
    error: str | None = None
    notices: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    document_id: int | None = None


@dataclass
class IngestSummary:
    files: list[FileResult] = field(default_factory=list)
    chunks: int = 0
    embedded: int = 0  # vectors computed now
    cached: int = 0  # vectors found in the cache
    seconds: float = 0.0
    dry_run: bool = False
    removed: list[str] = field(default_factory=list)  # sources whose files are gone (--sync)

    def count(self, status: str) -> int:
        return sum(1 for f in self.files if f.status == status)

    @property
    def failed(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "failed"]


@dataclass(frozen=True)
class IngestOptions:
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    force: bool = False
    dry_run: bool = False
    tags: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)
    passwords: tuple[str, ...] = ()
    password_map: dict[str, str] = field(default_factory=dict)  # file name or path -> password
    stdin_name: str | None = None
    follow_symlinks: bool = False  # follow file links that lead out of the directory being walked
    confine_to: tuple[Path, ...] = ()  # when set, nothing outside these (resolved) directories is read
    max_file_size: int = 64 << 20  # bytes; a larger file (or standard input) fails alone, unread
    sync: bool = False  # afterwards, remove documents from under the named directories whose files are gone


# -- discovery ----------------------------------------------------------------------------------------
def _matches(rel: str, patterns: Sequence[str]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(name, p) for p in patterns)


def discover(paths: Sequence[str], options: IngestOptions) -> tuple[list[Candidate], list[FileResult]]:
    """Expand files, directories (recursive, hidden entries skipped) and globs; report what does not exist."""
    found: list[Candidate] = []
    problems: list[FileResult] = []
    seen: set[str] = set()

    roots = tuple(r.resolve() for r in options.confine_to)

    def add(path: Path, display: str, walked_from: Path | None = None) -> None:
        """One file, or its problem: each fails alone (a loop, a dangling link, a FIFO beside good files)."""
        try:
            real = path.resolve(strict=True)
            mode = real.stat().st_mode
        except (OSError, RuntimeError) as exc:  # RuntimeError: Python 3.11's "Symlink loop"
            looped = isinstance(exc, RuntimeError) or getattr(exc, "errno", None) == errno.ELOOP
            why = "symbolic link loop" if looped else (
                "dangling symbolic link (its target does not exist)" if path.is_symlink()
                else f"cannot read: {getattr(exc, 'strerror', None) or exc}")
            problems.append(FileResult(str(path), display, "failed", error=why))
            return
        if walked_from is not None and path.is_symlink() and not options.follow_symlinks \
                and not _inside(real, (walked_from.resolve(),)):
            problems.append(FileResult(str(real), display, "skipped",
                                       error=f"symbolic link to {real}, outside {walked_from} "
                                             f"(--follow-symlinks follows it)"))
            return
        if roots and not _inside(real, roots):
            problems.append(FileResult(str(real), display, "failed", error="outside the allowed directories"))
            return
        if not stat.S_ISREG(mode):
            if walked_from is None:
                raise InvalidInputError(f"{display}: not a regular file", hint="name files, directories or - (stdin)")
            problems.append(FileResult(str(real), display, "skipped", error="not a regular file (FIFO, device or "
                                                                            "socket)"))
            return
        source, display = _printable(str(real)), _printable(display)
        if source not in seen:
            seen.add(source)
            found.append(Candidate(display, path, source))

    for raw in paths:
        if raw == "-":
            name = options.stdin_name or "stdin"
            found.append(Candidate(name, None, f"stdin:{name}"))
            continue
        path = Path(raw).expanduser()
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS)
                for name in sorted(files):
                    if name.startswith("."):
                        continue
                    full = Path(root) / name
                    rel = full.relative_to(path).as_posix()
                    if options.include and not _matches(rel, options.include):
                        continue
                    if options.exclude and _matches(rel, options.exclude):
                        continue
                    add(full, str(full), walked_from=path)
        elif path.exists() or path.is_symlink():
            add(path, raw)
        elif any(c in raw for c in "*?["):
            matches = sorted(glob.glob(raw, recursive=True))
            files = [Path(m) for m in matches if not Path(m).is_dir()]
            if not files:
                problems.append(FileResult(raw, raw, "failed", error="no file matches this pattern"))
            for file in files:
                add(file, str(file), walked_from=file.parent)
        else:
            problems.append(FileResult(raw, raw, "failed", error="no such file or directory"))
    return found, problems


def _sync_dirs(paths: Sequence[str]) -> list[Path]:
    """The directories --sync keeps in step (resolved). One that does not exist is not synced: an unmounted
    disk or a typo must not empty the store."""
    dirs = [Path(p).expanduser().resolve() for p in paths if p != "-" and Path(p).expanduser().is_dir()]
    if not dirs:
        raise InvalidInputError("--sync needs a directory", hint="name the directory whose files you ingested")
    return dirs


def _printable(name: str) -> str:
    """A file name as text: names that are not UTF-8 (kept by Python as surrogates, which PostgreSQL cannot
    store) get their odd bytes written as \\xNN, the same way every time, so a re-ingest finds the document."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")


def _inside(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


# -- the pipeline -------------------------------------------------------------------------------------
@dataclass
class _Prepared:
    candidate: Candidate
    result: FileResult
    content_hash: bytes
    media_type: str
    title: str | None
    metadata: dict[str, Any]
    chunks: list[Chunk]
    hashes: list[bytes]


class Ingestor:
    def __init__(self, db: Database, config: Config, embedder: Embedder, store: StoreRef,
                 options: IngestOptions | None = None, progress: Progress | None = None,
                 stdin: Callable[[], bytes] | None = None) -> None:
        self.db = db
        self.config = config
        self.embedder = embedder
        self.store = store
        self.options = options or IngestOptions()
        self.progress = progress or (lambda event, info: None)
        self.stdin = stdin
        self.summary = IngestSummary(dry_run=self.options.dry_run)
        self.pipeline = {"version": PIPELINE_VERSION, "chunk_tokens": config.chunk_tokens,
                         "chunk_overlap": config.chunk_overlap, "max_tokens": embedder.max_tokens}
        self._store_id: int | None = None
        self._space_id: int | None = None
        self._pending: list[_Prepared] = []
        self._written = 0  # chunks written by this run
        self._bulk = False  # the space's index was dropped for the rest of this load

    # public
    def run(self, paths: Sequence[str]) -> IngestSummary:
        if self.options.dry_run:
            return self._run(paths)
        with self.db.writing():
            return self._run(paths)

    def _run(self, paths: Sequence[str]) -> IngestSummary:
        start = time.perf_counter()
        synced = _sync_dirs(paths) if self.options.sync else []
        candidates, problems = discover(paths, self.options)
        self.summary.files.extend(problems)
        if not candidates and not problems:
            raise InvalidInputError("nothing to ingest", hint="name files, directories, globs or - for stdin")
        with self.db.connect() as conn:
            self._store_id = self.store.id(conn, create=not self.options.dry_run)
            self._space_id = vectors.ensure_space(conn, self.embedder.provider, self.embedder.model,
                                                  self.embedder.dim)
        self.progress("start", {"files": len(candidates)})
        try:
            for candidate in candidates:
                self._one(candidate)
                if sum(len(p.chunks) for p in self._pending) >= EMBED_BATCH:
                    self._flush()
            self._flush()
            if synced:
                self._sync(synced, {c.source for c in candidates})
        finally:
            if not self.options.dry_run:
                with self.db.connect() as conn:
                    self.progress("index", {})
                    vectors.ensure_index(conn, self._space_id, self.embedder.dim)
                if self.summary.chunks >= ANALYZE_ROWS:
                    self.db.analyze("chunks", "documents", "embeddings")
            self.summary.seconds = time.perf_counter() - start
        return self.summary

    def _sync(self, dirs: Sequence[Path], found: set[str]) -> None:
        """Documents ingested from under `dirs` whose files no longer exist go (a dry run lists them). A file
        still there but not read this time (excluded, hidden, unreadable) keeps its document."""
        from sqlalchemy import text

        if self._store_id is None:
            return
        prefixes = {f"p{n}": _printable(str(d)).rstrip("/") + "/" for n, d in enumerate(dirs)}
        under = " OR ".join(f"starts_with(source, :{key})" for key in prefixes)
        with self.db.connect() as conn:
            rows = conn.execute(text(f"SELECT id, source FROM documents WHERE store_id = :s AND ({under}) "
                                     f"ORDER BY source FOR UPDATE"), {"s": self._store_id, **prefixes}).all()
            gone = [(doc_id, source) for doc_id, source in rows
                    if source not in found and not os.path.exists(source)]
            if gone and not self.options.dry_run:
                conn.execute(text("DELETE FROM documents WHERE id = ANY(:ids)"), {"ids": [i for i, _ in gone]})
        self.summary.removed = [source for _, source in gone]

    # one file: read, skip if unchanged, load and chunk (no database writes yet)
    def _one(self, candidate: Candidate) -> None:
        result = FileResult(candidate.source, candidate.display, "failed")
        try:
            data = self._read(candidate)
        except OSError as exc:
            result.error = f"cannot read: {exc.strerror}"
            return self._done(result)
        except InvalidInputError as exc:
            if candidate.path is None:
                raise  # standard input is the whole run's input: its limit is the command's error (exit 4)
            result.error = exc.message
            return self._done(result)
        file_hash = content_hash(data)
        kind = detect(candidate.path or Path(candidate.display), data if len(data) < 64 << 20 else data[:65536])
        if kind is None:
            result.status, result.error = "skipped", "unsupported or binary file"
            return self._done(result)
        existing = self._existing(candidate.source)
        if existing and not self.options.force and existing["content_hash"] == file_hash \
                and existing["pipeline"] == self.pipeline and existing["fully_embedded"]:
            result.status, result.document_id = "unchanged", existing["id"]
            result.chunks = existing["chunks"]
            return self._done(result)
        if kind != "pdf" and not data.lstrip(b"\xef\xbb\xbf").strip():
            return self._empty(result, existing)
        try:
            loaded = load(candidate.path or Path(candidate.display), data, kind, self._load_options(candidate))
        except LoadError as exc:
            result.error = str(exc)
            return self._done(result)
        except RecursionError:
            result.error = "structure too deeply nested to read"
            return self._done(result)
        result.notices, result.warnings = loaded.notices, loaded.warnings
        result.title = _printable(loaded.title) if loaded.title else loaded.title
        chunks = chunk_sections(loaded.sections, target=self.config.chunk_tokens,
                                overlap=self.config.chunk_overlap, max_tokens=self.embedder.max_tokens)
        if not chunks:
            return self._empty(result, existing)
        result.status = "updated" if existing else "added"
        result.chunks = len(chunks)
        metadata = {**loaded.metadata, **self.options.meta, "_pipeline": self.pipeline}
        if candidate.path is not None:
            metadata.setdefault("file_name", _printable(candidate.path.name))
        self._pending.append(_Prepared(candidate, result, file_hash, loaded.media_type, result.title, metadata,
                                       chunks, [content_hash(c.embed_text) for c in chunks]))
        self.progress("loaded", {"display": candidate.display, "chunks": len(chunks)})
        return None

    def _read(self, candidate: Candidate) -> bytes:
        """The file's bytes, never more than max_file_size: a larger file fails alone before it is read."""
        from ltm_cli.parsing import human_size, read_limited

        limit = self.options.max_file_size
        if candidate.path is None:
            if self.stdin is None:
                raise InvalidInputError("standard input is not available here")
            data = self.stdin(limit)
        else:
            size = candidate.path.stat().st_size
            if size > limit:
                raise InvalidInputError(f"file is {human_size(size)}, over the {human_size(limit)} limit "
                                        f"(--max-file-size)")
            with candidate.path.open("rb") as handle:
                data = read_limited(handle, limit, candidate.display)
        return data

    def _empty(self, result: FileResult, existing: dict[str, Any] | None) -> None:
        """A file with no text (empty, whitespace, a PDF of blank pages) is skipped, not failed; the document
        it used to be is removed, so search never serves text the file no longer has."""
        from sqlalchemy import text

        result.status, result.error = "skipped", "no text to index (empty file)"
        if existing and not self.options.dry_run:
            with self.db.connect() as conn:
                conn.execute(text("DELETE FROM documents WHERE id = :i"), {"i": existing["id"]})
            result.notices.append("it had text before: its old chunks were removed")
        return self._done(result)

    def _load_options(self, candidate: Candidate) -> LoadOptions:
        passwords = list(self.options.passwords)
        for key in (candidate.display, candidate.source, candidate.path.name if candidate.path else ""):
            if key in self.options.password_map:
                passwords.insert(0, self.options.password_map[key])
        return LoadOptions(passwords=tuple(passwords))

    def _existing(self, source: str) -> dict[str, Any] | None:
        from sqlalchemy import text

        if self._store_id is None:
            return None
        with self.db.connect() as conn:
            # One round trip answers both "is it the same file?" and "does every chunk have its vector in
            # this space?": the unchanged path is the hot one when re-ingesting a large tree.
            row = conn.execute(text(
                "SELECT d.id, d.content_hash, d.metadata -> '_pipeline' AS pipeline, "
                "(SELECT count(*) FROM chunks c WHERE c.document_id = d.id) AS chunks, "
                "NOT EXISTS (SELECT 1 FROM chunks c WHERE c.document_id = d.id AND NOT EXISTS "
                "(SELECT 1 FROM embeddings e WHERE e.space_id = :sp AND e.content_hash = c.embed_hash)) "
                "AS fully_embedded "
                "FROM documents d WHERE d.store_id = :s AND d.source = :src"),
                {"s": self._store_id, "src": source, "sp": self._space_id}).mappings().first()
        if row is None:
            return None
        return {**row, "content_hash": bytes(row["content_hash"])}

    # embed what the batch needs, then write each document in its own transaction
    def _flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        texts: dict[bytes, str] = {}
        for prepared in batch:
            for chunk, digest in zip(prepared.chunks, prepared.hashes, strict=True):
                texts.setdefault(digest, chunk.embed_text)
        done = embed_and_cache(self.db, self.embedder, self._space_id, texts, dry_run=self.options.dry_run,
                               progress=self.progress, batch=max(len(texts), 1))
        self.summary.embedded += done.computed
        self.summary.cached += done.cached
        if self.options.dry_run:
            for prepared in batch:
                self.summary.chunks += len(prepared.chunks)
                self._done(prepared.result)
            return
        for prepared in batch:
            if not self._bulk and self._written + len(prepared.chunks) > BULK_CHUNKS:
                with self.db.connect() as conn:
                    vectors.drop_index(conn, self._space_id)
                self._bulk = True
            with self.db.connect() as conn:
                prepared.result.document_id = self._write_document(conn, prepared)
            if prepared.result.status != "unchanged":
                self._written += len(prepared.chunks)
            self.summary.chunks += len(prepared.chunks)
            self._done(prepared.result)

    def _write_document(self, conn: Connection, prepared: _Prepared) -> int:
        """Document row and all its chunks in the caller's transaction: all visible at commit, or nothing.

        The row is locked first, so concurrent runs over the same file take turns and each reports what it
        really did: the first "added", the others "unchanged" (or "updated" when their content differs)."""
        import json

        from sqlalchemy import text

        key = {"s": self._store_id, "src": prepared.candidate.source}
        current_sql = text("SELECT id, content_hash, metadata -> '_pipeline' AS pipeline FROM documents "
                           "WHERE store_id = :s AND source = :src FOR UPDATE")
        values = {**key, "h": prepared.content_hash, "mt": prepared.media_type, "t": prepared.title,
                  "m": json.dumps(prepared.metadata, ensure_ascii=False), "tags": list(self.options.tags)}
        current = conn.execute(current_sql, key).first()
        if current is None:
            doc_id = conn.execute(text("""
                INSERT INTO documents (store_id, source, content_hash, media_type, title, metadata, tags)
                VALUES (:s, :src, :h, :mt, :t, CAST(:m AS jsonb), :tags)
                ON CONFLICT (store_id, source) DO NOTHING RETURNING id"""), values).scalar()
            if doc_id is None:  # another run inserted it after our look-up: wait for its commit, then decide
                current = conn.execute(current_sql, key).first()
            else:
                prepared.result.status = "added"
        if current is not None:
            same = bytes(current.content_hash) == prepared.content_hash and current.pipeline == self.pipeline
            if same and not self.options.force:
                prepared.result.status = "unchanged"
                return current.id
            prepared.result.status = "updated"
            doc_id = current.id
            conn.execute(text("""
                UPDATE documents SET content_hash = :h, media_type = :mt, title = :t, metadata = CAST(:m AS jsonb),
                  tags = :tags, updated_at = now() WHERE id = :id"""), {**values, "id": doc_id})
            conn.execute(text("DELETE FROM chunks WHERE document_id = :d"), {"d": doc_id})
        write_chunks(conn, doc_id, self._store_id, prepared.chunks, prepared.hashes)
        return doc_id

    def _done(self, result: FileResult) -> None:
        self.summary.files.append(result)
        self.progress("file", {"display": result.display, "status": result.status, "chunks": result.chunks})


def write_chunks(conn: Connection, document_id: int, store: int, chunks: Iterable[Chunk],
                 hashes: Sequence[bytes]) -> None:
    rows = ((document_id, store, c.ordinal, c.heading, c.text, c.location, c.token_count, h)
            for c, h in zip(chunks, hashes, strict=True))
    copy_in(conn, "chunks", ("document_id", "store_id", "ordinal", "heading", "text", "location", "token_count",
                             "embed_hash"),
            encode_rows(rows, ("int8", "int4", "int4", "text", "text", "jsonb", "int4", "bytea")))
