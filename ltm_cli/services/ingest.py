"""Reference memory: files -> loaders -> chunks -> embeddings -> documents written a batch per transaction."""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import glob
import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ltm_cli.chunking import Chunk, chunk_sections
from ltm_cli.errors import InvalidInputError
from ltm_cli.loaders import LoadError, LoadOptions, detect, load
from ltm_cli.services.embedding import Progress, checked, content_hash
from ltm_cli.storage import vectors
from ltm_cli.storage.copy import copy_in, encode_rows
from ltm_cli.storage.stores import StoreRef

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from ltm_cli.config import Config
    from ltm_cli.embedders.base import Embedder
    from ltm_cli.storage.engine import Database

PIPELINE_VERSION = 5  # bump when loaders or chunking change what a file turns into
SKIP_DIRS = {".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv", "venv", ".tox", ".mypy_cache"}
BULK_CHUNKS = 1000  # once a run has written this many new vectors, the rest load without the space's HNSW index
# (rebuilt at the end): inserting into HNSW runs at hundreds of rows/s, building it at thousands
REBUILD_RATIO = 8  # ... unless the index already holds this many times what the run has written: rebuilding
# a large space's index for a small addition costs more than inserting into it
ANALYZE_ROWS = 1000  # refresh planner statistics after writing this many chunks
EMBED_BATCH = 256  # chunks gathered across documents before the embedder runs; also written in one transaction
GROUP_FILES = 64  # files read ahead and looked up in the database with one query
GROUP_BYTES = 16 << 20  # ... or fewer, once they hold this many bytes
READ_AHEAD = 128  # loaded files (or their results) the reader thread may be ahead of embedding and writing


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
        missing = [p for p in paths if p != "-" and not Path(p).expanduser().exists()]
        if missing:
            raise InvalidInputError(f"--sync: no such directory: {missing[0]}",
                                    hint="check the path (an unmounted disk?); nothing was removed")
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


@dataclass
class _Read:
    candidate: Candidate
    data: bytes
    file_hash: bytes
    kind: str


_END = object()  # the reader thread's last item


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
        self._vectors = 0  # vectors written by this run
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
            with contextlib.closing(self._prepared(candidates)) as prepared:  # closing stops the reader thread
                for item in prepared:
                    if isinstance(item, FileResult):
                        self._done(item)
                        continue
                    self._pending.append(item)
                    self.progress("loaded", {"display": item.candidate.display, "chunks": len(item.chunks)})
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

    def _prepared(self, candidates: Sequence[Candidate]) -> Iterator[_Prepared | FileResult]:
        """What each file turns into, in order: read, looked up, loaded and chunked by a second thread, so
        parsing the next files overlaps with embedding and writing these (the model, the tokenizer and the
        database all release the GIL). Its errors are raised here; stopping early stops it."""
        import queue
        import threading

        items: queue.Queue[Any] = queue.Queue(maxsize=READ_AHEAD)
        stop = threading.Event()

        def put(item: Any) -> bool:
            while not stop.is_set():
                try:
                    items.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def read_all() -> None:
            try:
                for group in self._groups(candidates):
                    for item in self._load_group(group):
                        if not put(item):
                            return
                put(_END)
            except BaseException as exc:  # noqa: BLE001 - handed to the consuming thread, which raises it
                put(exc)

        reader = threading.Thread(target=read_all, name="ltm-ingest-reader", daemon=True)
        reader.start()
        finished = False
        try:
            while True:
                item = items.get()
                if item is _END:
                    finished = True
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            # Stopped early (an error, Ctrl-C): the reader stops at its next file; do not wait out a long PDF.
            reader.join(None if finished else 1.0)

    def _groups(self, candidates: Sequence[Candidate]) -> Iterator[list[_Read | FileResult]]:
        """The candidates read, a few at a time (at most GROUP_FILES files and about GROUP_BYTES of them)."""
        group: list[_Read | FileResult] = []
        size = 0
        for candidate in candidates:
            item = self._read_one(candidate)
            group.append(item)
            size += len(item.data) if isinstance(item, _Read) else 0
            if len(group) >= GROUP_FILES or size >= GROUP_BYTES:
                yield group
                group, size = [], 0
        if group:
            yield group

    def _read_one(self, candidate: Candidate) -> _Read | FileResult:
        result = FileResult(candidate.source, candidate.display, "failed")
        try:
            data = self._read(candidate)
        except OSError as exc:
            result.error = f"cannot read: {exc.strerror}"
            return result
        except InvalidInputError as exc:
            if candidate.path is None:
                raise  # standard input is the whole run's input: its limit is the command's error (exit 4)
            result.error = exc.message
            return result
        kind = detect(candidate.path or Path(candidate.display), data if len(data) < 64 << 20 else data[:65536])
        if kind is None:
            result.status, result.error = "skipped", "unsupported or binary file"
            return result
        return _Read(candidate, data, content_hash(data), kind)

    def _load_group(self, group: Sequence[_Read | FileResult]) -> Iterator[_Prepared | FileResult]:
        existing = self._existing([r.candidate.source for r in group if isinstance(r, _Read)])
        for item in group:
            yield item if isinstance(item, FileResult) else self._one(item, existing.get(item.candidate.source))

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

    # one file: skip if unchanged, load and chunk (no database writes yet)
    def _one(self, read: _Read, existing: dict[str, Any] | None) -> _Prepared | FileResult:
        candidate, data, file_hash, kind = read.candidate, read.data, read.file_hash, read.kind
        result = FileResult(candidate.source, candidate.display, "failed")
        if existing and not self.options.force and existing["content_hash"] == file_hash \
                and existing["pipeline"] == self.pipeline and existing["fully_embedded"]:
            result.status, result.document_id = "unchanged", existing["id"]
            result.chunks = existing["chunks"]
            return result
        if kind != "pdf" and not data.lstrip(b"\xef\xbb\xbf").strip():
            return self._empty(result, existing)
        try:
            loaded = load(candidate.path or Path(candidate.display), data, kind, self._load_options(candidate))
        except LoadError as exc:
            result.error = str(exc)
            return result
        except RecursionError:
            result.error = "structure too deeply nested to read"
            return result
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
        return _Prepared(candidate, result, file_hash, loaded.media_type, result.title, metadata, chunks,
                         [content_hash(c.embed_text) for c in chunks])

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

    def _empty(self, result: FileResult, existing: dict[str, Any] | None) -> FileResult:
        """A file with no text (empty, whitespace, a PDF of blank pages) is skipped, not failed; the document
        it used to be is removed, so search never serves text the file no longer has."""
        from sqlalchemy import text

        result.status, result.error = "skipped", "no text to index (empty file)"
        if existing and not self.options.dry_run:
            with self.db.connect() as conn:
                conn.execute(text("DELETE FROM documents WHERE id = :i"), {"i": existing["id"]})
            result.notices.append("it had text before: its old chunks were removed")
        return result

    def _load_options(self, candidate: Candidate) -> LoadOptions:
        passwords = list(self.options.passwords)
        for key in (candidate.display, candidate.source, candidate.path.name if candidate.path else ""):
            if key in self.options.password_map:
                passwords.insert(0, self.options.password_map[key])
        return LoadOptions(passwords=tuple(passwords))

    def _existing(self, sources: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Per source already stored: its id, hashes, chunk count and whether every chunk has its vector in
        this space. One round trip for a group of files: the unchanged path is the hot one when re-ingesting a
        large tree."""
        from sqlalchemy import text

        if self._store_id is None or not sources:
            return {}
        with self.db.connect() as conn:
            rows = conn.execute(text(
                "SELECT d.id, d.source, d.content_hash, d.metadata -> '_pipeline' AS pipeline, "
                "(SELECT count(*) FROM chunks c WHERE c.document_id = d.id) AS chunks, "
                "NOT EXISTS (SELECT 1 FROM chunks c WHERE c.document_id = d.id AND NOT EXISTS "
                "(SELECT 1 FROM embeddings e WHERE e.space_id = :sp AND e.content_hash = c.embed_hash)) "
                "AS fully_embedded "
                "FROM documents d WHERE d.store_id = :s AND d.source = ANY(CAST(:src AS text[]))"),
                {"s": self._store_id, "src": list(sources), "sp": self._space_id}).mappings().all()
        return {row["source"]: {**row, "content_hash": bytes(row["content_hash"])} for row in rows}

    # embed what the batch needs, then write the batch in one transaction, each document all-or-nothing
    def _flush(self) -> None:

        if not self._pending:
            return
        batch, self._pending = self._pending, []
        texts: dict[bytes, str] = {}
        for prepared in batch:
            for chunk, digest in zip(prepared.chunks, prepared.hashes, strict=True):
                texts.setdefault(digest, chunk.embed_text)
        with self.db.connect() as conn:
            absent = vectors.missing(conn, self._space_id, list(texts))
        todo = [h for h in texts if h in absent]
        self.summary.embedded += len(todo)
        self.summary.cached += len(texts) - len(todo)
        if self.options.dry_run:
            for prepared in batch:
                self.summary.chunks += len(prepared.chunks)
                self._done(prepared.result)
            return
        matrix = self._embed([texts[h] for h in todo])
        self._vectors += len(todo)
        if not self._bulk and self._vectors > BULK_CHUNKS:
            self._bulk = self._drop_index()
        # Not waiting for the WAL flush of each commit is most of a small file's cost. A crash of the server or
        # the machine may lose the last moments of commits, whole, never part of one; the next run of the same
        # ingest finds those files changed and writes them again. Vectors go first in the same transaction: a
        # chunk is never visible without its vector.
        with self.db.connect(durable=False) as conn:
            vectors.write(conn, self._space_id, todo, matrix)
            self._write_group(conn, batch)
        for prepared in batch:
            if prepared.result.status != "failed":
                self.summary.chunks += len(prepared.chunks)
            self._done(prepared.result)

    def _drop_index(self) -> bool:
        """Drop the space's HNSW index for the rest of this load (ensure_index rebuilds it at the end), unless
        it is large next to what this run writes; True when the run need not ask again."""
        from sqlalchemy import text

        with self.db.connect() as conn:  # its own short transaction: DROP INDEX locks out searches
            rows = conn.execute(text("SELECT reltuples FROM pg_class WHERE oid = to_regclass(:n)"),
                                {"n": vectors.index_name(self._space_id)}).scalar()
            if rows is not None and rows > REBUILD_RATIO * self._vectors:
                return False
            vectors.drop_index(conn, self._space_id)
        return True

    def _embed(self, texts: list[str]) -> Any:
        import numpy as np

        if not texts:
            return np.zeros((0, self.embedder.dim), dtype=np.float32)
        self.progress("embedding", {"texts": len(texts)})
        started = time.perf_counter()
        matrix = checked(self.embedder, self.embedder.embed(texts), len(texts))
        self.progress("embedded", {"texts": len(texts), "seconds": time.perf_counter() - started})
        return matrix

    def _write_group(self, conn: Connection, batch: Sequence[_Prepared]) -> None:
        """All of the batch's documents, or, when the server refuses something, each document alone under its
        own SAVEPOINT: a document that still fails is reported failed and the others are kept."""
        ordered = sorted(batch, key=lambda p: p.candidate.source)  # one lock order for concurrent runs
        try:
            with conn.begin_nested():
                self._write_documents(conn, ordered)
            return
        except Exception as exc:
            if _refusal(exc) is None:
                raise
        for prepared in ordered:
            try:
                with conn.begin_nested():
                    prepared.result.document_id = self._write_document(conn, prepared)
            except Exception as exc:
                why = _refusal(exc)
                if why is None:
                    raise
                prepared.result.status, prepared.result.document_id = "failed", None
                prepared.result.error = f"not stored: {why}"

    def _write_documents(self, conn: Connection, ordered: Sequence[_Prepared]) -> None:
        """New documents in one INSERT and their chunks in one COPY; a document already stored (or that a
        concurrent run inserts first) takes the one-document path, which decides unchanged or updated."""
        import json

        from sqlalchemy import text

        sources = [p.candidate.source for p in ordered]
        stored = set(conn.execute(text(
            "SELECT source FROM documents WHERE store_id = :s AND source = ANY(CAST(:src AS text[])) "
            "ORDER BY source FOR UPDATE"), {"s": self._store_id, "src": sources}).scalars())
        fresh: dict[str, _Prepared] = {}
        for prepared in ordered:
            if prepared.candidate.source not in stored:
                fresh.setdefault(prepared.candidate.source, prepared)  # standard input named twice: once
        ids: dict[str, int] = {}
        if fresh:
            docs = list(fresh.values())
            ids = dict(conn.execute(text("""
                INSERT INTO documents (store_id, source, content_hash, media_type, title, metadata, tags)
                SELECT :s, u.source, u.h, u.mt, u.t, CAST(u.m AS jsonb), CAST(:tags AS text[])
                FROM unnest(CAST(:src AS text[]), CAST(:h AS bytea[]), CAST(:mt AS text[]), CAST(:t AS text[]),
                            CAST(:m AS text[])) AS u(source, h, mt, t, m)
                ORDER BY u.source
                ON CONFLICT (store_id, source) DO NOTHING RETURNING source, id"""), {
                "s": self._store_id, "tags": list(self.options.tags),
                "src": [p.candidate.source for p in docs], "h": [p.content_hash for p in docs],
                "mt": [p.media_type for p in docs], "t": [p.title for p in docs],
                "m": [json.dumps(p.metadata, ensure_ascii=False) for p in docs]}).all())
        written = []
        for prepared in ordered:
            doc_id = ids.get(prepared.candidate.source)
            if doc_id is not None and fresh[prepared.candidate.source] is prepared:
                prepared.result.status, prepared.result.document_id = "added", doc_id
                written.append((doc_id, prepared.chunks, prepared.hashes))
            else:
                prepared.result.document_id = self._write_document(conn, prepared)
        copy_chunks(conn, self._store_id, written)

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


def _refusal(exc: Exception) -> str | None:
    """The server's first line when it refused a statement (the transaction can go on after a rollback to a
    savepoint); None for anything else, a lost connection included. COPY runs on the driver's cursor, so its
    errors come unwrapped by SQLAlchemy."""
    import psycopg2
    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return None
        exc = exc.orig  # type: ignore[assignment]
    if not isinstance(exc, psycopg2.Error) or isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError):
        return None
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def write_chunks(conn: Connection, document_id: int, store: int, chunks: Sequence[Chunk],
                 hashes: Sequence[bytes]) -> None:
    copy_chunks(conn, store, [(document_id, chunks, hashes)])


def copy_chunks(conn: Connection, store: int,
                documents: Iterable[tuple[int, Sequence[Chunk], Sequence[bytes]]]) -> None:
    """The chunks of these documents, (document id, chunks, their embed hashes) each, in one binary COPY."""
    rows = [(document_id, store, c.ordinal, c.heading, c.text, c.location, c.token_count, h)
            for document_id, chunks, hashes in documents for c, h in zip(chunks, hashes, strict=True)]
    if not rows:
        return
    copy_in(conn, "chunks", ("document_id", "store_id", "ordinal", "heading", "text", "location", "token_count",
                             "embed_hash"),
            encode_rows(rows, ("int8", "int4", "int4", "text", "text", "jsonb", "int4", "bytea")))
