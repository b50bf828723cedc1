"""`Memory`: the one library object over a store. The CLI, the MCP server, the benchmarks and Python apps
all call it, so each behaviour lives once, below them.

    from ltm_cli import Memory

    with Memory.open("assistant") as memory:
        memory.settings.set("voice.speed", 1.2, note="user asked to speak faster", by="agent")
        memory.docs.ingest(["manual.pdf"])
        hits = memory.search("how do I reset the device")
        turn = memory.history.add("Reset it with the pin", role="assistant", conversation="c1")
        memory.history.outcome(turn.message_id, "success")
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ltm_cli.parsing import check_range, parse_meta, parse_time
from ltm_cli.storage.stores import StoreRef

if TYPE_CHECKING:
    import numpy as np

    from ltm_cli.config import Config
    from ltm_cli.conversations import NewConversation
    from ltm_cli.embedders.base import Embedder
    from ltm_cli.services.admin import Collected, Status
    from ltm_cli.services.distill import DistillSummary
    from ltm_cli.services.documents import DocumentDetail, DocumentInfo
    from ltm_cli.services.embedding import Progress
    from ltm_cli.services.embedspace import Dropped, EmbedStatus, Migrated, Switched
    from ltm_cli.services.evaluate import Baseline, Golden, Report
    from ltm_cli.services.filters import Filters
    from ltm_cli.services.history import Added, ConversationInfo, ImportSummary, MessageInfo
    from ltm_cli.services.ingest import IngestSummary
    from ltm_cli.services.notes import NoteDetail, NoteInfo, Remembered
    from ltm_cli.services.recall import Recall
    from ltm_cli.services.retention import Forgotten
    from ltm_cli.services.search import Hit, Hits
    from ltm_cli.services.settings import ImportResult, SetResult, Version
    from ltm_cli.services.stores import Stores
    from ltm_cli.services.transfer import ExportSummary as TransferExport
    from ltm_cli.services.transfer import ImportSummary as TransferImport
    from ltm_cli.storage.engine import Database

Time = str | dt.datetime | None
_MISSING: Any = object()
MAX_LIMIT = 1000  # results one search returns at most
NOTE_MATCH = 0.5  # cosine at which a note matches a recall query without sharing a word with it


class Memory:
    """One store of long-term memory: settings, conversation history and reference documents.

    Build it with `Memory.open(...)`, which resolves configuration exactly as the `ltm` command does
    (arguments > LTM_* environment > config file > defaults). It holds one `Database` (a connection pool)
    and builds the embedder once, on first use. Use it as a context manager, or call `close()`.
    Errors are `ltm_cli.errors.LtmError` subclasses, each with the CLI's exit code."""

    def __init__(self, config: Config, *, embedder: Embedder | None = None, db: Database | None = None) -> None:
        from ltm_cli.storage.engine import Database

        self.config = config
        self.db = db if db is not None else Database(config)
        self.store = StoreRef(config.store)
        self._embedder = embedder
        self._explicit = embedder is not None  # an instance the caller gave wins over the store's space
        self.embedder_source = "embedder the caller gave" if embedder is not None else None
        self.settings = Settings(self)
        self.docs = Docs(self)
        self.history = History(self)
        self.notes = Notes(self)

    @classmethod
    def open(cls, store: str | None = None, *, database_url: str | None = None, home: str | None = None,
             embedder: str | Embedder | None = None, **options: Any) -> Memory:
        """Open a store (default: LTM_STORE, else "default"). `embedder` is a name (local, openai, hash) or
        any object with the `Embedder` interface; other options are config keys (e.g. chunk_tokens=128)."""
        from ltm_cli.config import load_config

        flags = {"store": store, "database_url": database_url, "home": str(home) if home else None, **options}
        instance = None
        if isinstance(embedder, str):
            flags["embedder"] = embedder
        elif embedder is not None:
            instance = embedder
        return cls(load_config(flags), embedder=instance)

    def with_store(self, name: str) -> Memory:
        """The same database and embedder, another store."""
        return Memory(self.config.replace(store=name), embedder=self._embedder if self._explicit else None,
                      db=self.db)

    @property
    def store_name(self) -> str:
        return self.store.name

    def store_exists(self) -> bool:
        """Whether the store has been written to (stores are made on first write)."""
        with self.db.cursor(autocommit=True) as conn:
            return self.store.id(conn, create=False) is not None

    @property
    def embedder(self) -> Embedder:
        """Built on first use and kept: the local model loads once per process. The store's active space (its
        `embedding.space` setting, see `embed_switch`) wins over the configured embedder; `embedder_source`
        says which was used."""
        if self._embedder is None:
            from ltm_cli.services import embedspace

            self._embedder, self.embedder_source = embedspace.store_embedder(self.db, self.config, self.store)
        return self._embedder

    def close(self) -> None:
        self.db.dispose()

    def __enter__(self) -> Memory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Memory(store={self.store.name!r}, database={self.db.display_url if self.db._url else '…'})"

    # -- retrieval -------------------------------------------------------------------------------------
    def search(self, query: str, *, kind: str = "docs", mode: str = "hybrid", limit: int = 10,
               source: str | None = None, tags: Sequence[str] = (), meta: Mapping[str, Any] | None = None,
               since: Time = None, until: Time = None, role: str | None = None, outcome: str | None = None,
               conversation: str | None = None, about: str | None = None, closed: bool = False,
               context: int = 0, diverse: bool = False, include_toc: bool = False) -> Hits:
        """Hybrid search (BM25 and vector similarity, fused) over documents, history, notes or all of them.

        Filters narrow the search itself: `limit` results come back whenever that many match. Chunks of a PDF's
        contents and index pages rank after all others unless `include_toc`. The result is a list of hits whose
        `warnings` say when stored rows have no vector for this embedder (see `embed_migrate`)."""
        filters = self.filters(kind, source=source, tags=tags, meta=meta, since=since, until=until, role=role,
                               outcome=outcome, conversation=conversation, about=about, closed=closed)
        return self._search(query, filters, mode=mode, limit=limit, context=context, diverse=diverse,
                            include_toc=include_toc)

    def _search(self, query: str, filters: Filters, *, mode: str, limit: int, context: int = 0,
                diverse: bool = False, include_toc: bool = False, qvec: np.ndarray | None = None,
                feedback: bool = True) -> Hits:
        from ltm_cli.services.search import search
        from ltm_cli.services.settings import check_value

        check_value(query, "query")  # NUL and unpaired surrogates: refused before any look-up, stored or not
        check_range("limit", limit, 1, MAX_LIMIT)
        check_range("context", context, 0, 50)
        embedder = self.embedder if mode != "keyword" else None
        return search(self.db, embedder, self.store, query, mode=mode, limit=limit, filters=filters,
                      context=context, diverse=diverse, include_toc=include_toc, qvec=qvec, feedback=feedback)

    def recall(self, query: str, *, budget: int = 1500, kind: str = "all", mode: str = "hybrid",
               source: str | None = None, tags: Sequence[str] = (), meta: Mapping[str, Any] | None = None,
               since: Time = None, until: Time = None, role: str | None = None, outcome: str | None = None,
               conversation: str | None = None, context: int = 1, diverse: bool = False,
               include_toc: bool = False) -> Recall:
        """A prompt-ready Markdown block: the best passages and turns within `budget` tokens, each cited.
        Chunks of a PDF's contents and index pages are left out unless `include_toc`."""
        from dataclasses import replace

        from ltm_cli.services.recall import recall

        with_notes = kind in ("all", "notes") and not (source or role or outcome or conversation)
        rest = None if kind == "notes" else self.filters(kind, source=source, tags=tags, meta=meta, since=since,
                                                         until=until, role=role, outcome=outcome,
                                                         conversation=conversation)
        qvec = None
        if with_notes and rest is not None and mode != "keyword" and query.strip():
            from ltm_cli.services.embedding import query_vector
            from ltm_cli.services.settings import check_value

            rest.kinds()  # an invalid combination fails before the query is embedded
            check_value(query, "query")
            qvec = query_vector(self.embedder, query)  # one vector for both searches (OpenAI: one request)
        notes: list[Hit] = []
        found: Hits | list[Hit] = []
        if with_notes:
            # Live notes that match come first: they are dense, and distilled for exactly this. Without the
            # feedback round: it moves the query towards the best notes themselves, so their cosine (what
            # NOTE_MATCH judges) rose from 0.06 to 0.73 for a note that had nothing to do with the question.
            found = self._search(query, self.filters("notes", tags=tags, meta=meta, since=since, until=until),
                                 mode=mode, limit=5, qvec=qvec, feedback=False)
            notes = [h for h in found if h.keyword_rank is not None or (h.vector_score or 0.0) >= NOTE_MATCH]
        hits: Hits | list[Hit] = []
        if rest is not None:
            # Notes were searched above: in "all" they would only take places among the 40, to be dropped.
            hits = self._search(query, replace(rest, skip=("notes",)) if with_notes else rest, mode=mode,
                                limit=40, context=context, diverse=diverse, include_toc=include_toc, qvec=qvec)
        result = recall(query, notes + hits, budget=budget, include_toc=include_toc)
        result.warnings = list(dict.fromkeys([*getattr(found, "warnings", ()), *getattr(hits, "warnings", ())]))
        return result

    def evaluate(self, golden: str | os.PathLike[str] | Golden, *, mode: str = "hybrid", limit: int = 10,
                 baseline: str | os.PathLike[str] | Baseline | None = None, tolerance: float = 0.02) -> Report:
        """Score retrieval against a golden file of questions (`ltm eval`): hit@1/5/10, MRR@10 and nDCG@10 per
        mode ("all": each of the three) and per question. With `baseline` (an earlier result saved as JSON),
        `report.baseline.drops` lists the metrics that fell by more than `tolerance`."""
        from ltm_cli.services import evaluate as svc

        golden = golden if isinstance(golden, svc.Golden) else svc.load_golden(golden, self.config.max_input_size)
        modes = svc.modes_for(mode)
        check_range("limit", limit, 1, MAX_LIMIT)
        if baseline is not None:
            baseline = baseline if isinstance(baseline, svc.Baseline) \
                else svc.load_baseline(baseline, self.config.max_input_size)
            svc.check_gate(baseline, modes, tolerance)
        svc.require_memory(self.db, self.store, golden.kinds())
        space = f"{self.embedder.provider}/{self.embedder.model}" if modes != ("keyword",) else None
        report = svc.evaluate(golden, self.search, modes=modes, limit=limit, store=self.store_name, embedder=space)
        return svc.compare(report, baseline, tolerance=tolerance) if baseline is not None else report

    @staticmethod
    def filters(kind: str = "docs", *, source: str | None = None, tags: Sequence[str] = (),
                meta: Mapping[str, Any] | Iterable[str] | None = None, since: Time = None, until: Time = None,
                role: str | None = None, outcome: str | None = None, conversation: str | None = None,
                about: str | None = None, closed: bool = False) -> Filters:
        from ltm_cli.services.filters import Filters

        if conversation is not None and not conversation.strip():
            from ltm_cli.services.history import check_ref

            check_ref(conversation)
        if about:  # the notes service (and the vector code it imports) only when a search names a subject
            from ltm_cli.services.notes import check_about

            about = check_about(about)
        return Filters(kind=kind, source=source or None, tags=tuple(tags or ()), meta=parse_meta(meta),
                       since=parse_time(since), until=parse_time(until), role=role or None,
                       outcome=outcome or None, conversation=conversation or None, about=about or None,
                       closed_notes=closed)

    # -- embedding spaces ------------------------------------------------------------------------------
    def embed_status(self) -> EmbedStatus:
        """Each embedding space this store's rows have vectors in, the configured one marked active."""
        from ltm_cli.services import embedspace

        embedder = self.embedder
        return embedspace.status(self.db, embedder, self.store, source=self.embedder_source)

    def embed_migrate(self, *, to: str | None = None, dimensions: int | None = None, dry_run: bool = False,
                      batch: int | None = None, progress: Progress | None = None) -> Migrated:
        """Embed every chunk, message and note lacking a vector in the target space (`to` "provider[:model]",
        default the configured embedder), each batch committed: a re-run after an interruption continues."""
        from ltm_cli.services import embedspace

        check_range("batch", batch, 1)
        target = self.embedder if to is None and dimensions is None else \
            embedspace.target_embedder(self.config, to, dimensions)
        return embedspace.migrate(self.db, target, self.store, dry_run=dry_run, progress=progress,
                                  batch=batch or embedspace.EMBED_BATCH)

    def embed_switch(self, to: str | None = None, *, dimensions: int | None = None, back: bool = False,
                     force: bool = False, note: str | None = None, by: str | None = None) -> Switched:
        """Make a space (`to` "provider[:model]" and `dimensions`, default the configured embedder) the store's
        active one, as a new version of its `embedding.space` setting; `back` returns to the previous one.
        ConflictError when rows lack a vector there, unless `force` (run `embed_migrate(to=...)` first)."""
        from ltm_cli.services import embedspace

        if back:
            result = embedspace.switch_back(self.db, self.config, self.store, force=force, note=note, author=by)
        else:
            target = embedspace.target_embedder(self.config, to, dimensions)
            result = embedspace.switch(self.db, target, self.store, force=force, note=note, author=by)
        self._embedder = None if not self._explicit else self._embedder  # rebuilt from the new setting
        return result

    def embed_drop(self, space: str, *, dimensions: int | None = None,
                   confirm: Callable[[Dropped], None] | None = None) -> Dropped:
        """Delete a space's vectors and its HNSW index (`space` an id or "provider:model"); refused for the
        active space of any store. `confirm` sees what would go and may raise to stop it."""
        from ltm_cli.services import embedspace

        found = embedspace.find_droppable(self.db, self.config, space, dimensions)
        if confirm is not None:
            confirm(found)
        return embedspace.drop(self.db, found)

    # -- administration --------------------------------------------------------------------------------
    @property
    def stores(self) -> Stores:
        """Every store in the database: list, create, rename, copy, rm."""
        from ltm_cli.services.stores import Stores

        return Stores(self.db)

    def status(self) -> Status:
        from ltm_cli.services import admin

        return admin.status(self.db)

    def gc(self, *, dry_run: bool = False) -> Collected:
        """Apply every store's retention policy (settings retention.history, retention.notes: 180d, 12w, 6m,
        1y), then delete the vectors nothing uses. Refused (ConflictError) while a writer runs."""
        from ltm_cli.services import admin

        return admin.gc(self.db, dry_run=dry_run)

    def forget(self, *, source: str | None = None, conversation: str | None = None, before: Time = None,
               tag: str | None = None, dry_run: bool = True) -> Forgotten:
        """Delete in one transaction everything from one origin: documents whose source matches the glob
        `source`, one `conversation`, conversations last active `before` (a date or a period such as 180d),
        documents and notes tagged `tag`, and notes derived from what goes; then collect unused vectors.
        `dry_run` (the default) only lists what would go."""
        from ltm_cli.services import retention

        return retention.forget(self.db, self.store, source=source, conversation=conversation, before=before,
                                tag=tag, dry_run=dry_run)

    def export(self, path: str, *, vectors: bool = False, only: Sequence[str] | None = None,
               stdout: Any = None) -> TransferExport:
        """Write the whole store to one versioned JSON Lines file (gzip for *.gz; "-": `stdout`), atomically.
        `vectors` adds them as base64 float16; `only` picks parts: settings, history, docs, notes."""
        from ltm_cli.services import transfer

        return transfer.export_store(self.db, self.store, lambda: self.embedder, path, with_vectors=vectors,
                                     only=only, stdout=stdout)

    def import_(self, path: str, *, dry_run: bool = False, stdin: Any = None) -> TransferImport:
        """Read an `export` file into this store; importing it again adds nothing. Its vectors are reused when
        they come from this store's embedder, else recomputed."""
        from ltm_cli.services import transfer

        return transfer.import_store(self.db, self.embedder, self.store, transfer.open_lines(path, stdin),
                                     dry_run=dry_run)


class _Part:
    def __init__(self, memory: Memory) -> None:
        self._memory = memory

    @property
    def _db(self) -> Database:
        return self._memory.db

    @property
    def _store(self) -> StoreRef:
        return self._memory.store


def _as_list(value: Any) -> list[Any]:
    """A value given where a sequence is expected: one string, bytes or path is a list of one."""
    if value is None:
        return []
    if isinstance(value, (str, bytes, os.PathLike)):
        return [value]
    return list(value)


class Settings(_Part):
    """Versioned settings: every change kept, the active value one query away."""

    def get(self, key: str, *, at: Time = None, default: Any = _MISSING) -> Any:
        """The active value of `key` (a group returns its subtree as an object). Missing: `default` if given,
        else NotFoundError."""
        from ltm_cli.errors import NotFoundError
        from ltm_cli.services import settings as svc

        try:
            return svc.get(self._db, self._store, key, at=parse_time(at))
        except NotFoundError:
            if default is _MISSING:
                raise
            return default

    def set(self, key: str, value: Any, *, note: str | None = None, by: str | None = None,
            force: bool = False) -> SetResult:
        """Set `key` (any JSON value). An unchanged value writes nothing unless `force`."""
        from ltm_cli.services import settings as svc

        return svc.set_value(self._db, self._store, key, value, note=note, author=by, force=force)

    def unset(self, key: str, *, recursive: bool = False, note: str | None = None,
              by: str | None = None) -> list[str]:
        from ltm_cli.services import settings as svc

        return svc.unset(self._db, self._store, key, recursive=recursive, note=note, author=by)

    def list(self, prefix: str | None = None) -> list[Version]:
        from ltm_cli.services import settings as svc

        return svc.list_active(self._db, self._store, prefix)

    def history(self, key: str | None = None) -> list[Version]:
        from ltm_cli.services import settings as svc

        return svc.history(self._db, self._store, key)

    def revert(self, key: str, *, to: int | None = None, at: Time = None, note: str | None = None,
               by: str | None = None, force: bool = False) -> SetResult:
        """Write a new version equal to an old one (default: undo the last change); nothing when the key holds
        that already (`changed` False), unless `force`."""
        from ltm_cli.errors import InvalidInputError
        from ltm_cli.services import settings as svc

        if to is not None and at is not None:
            raise InvalidInputError("give --to or --at, not both")
        return svc.revert(self._db, self._store, key, to_version=to, at=parse_time(at), note=note, author=by,
                          force=force)

    def export(self, prefix: str | None = None) -> dict[str, Any]:
        from ltm_cli.services import settings as svc

        return svc.export(self._db, self._store, prefix)

    def import_(self, values: Mapping[str, Any], *, dry_run: bool = False, note: str | None = None,
                by: str | None = None) -> ImportResult:
        from ltm_cli.errors import InvalidInputError
        from ltm_cli.services import settings as svc

        if not isinstance(values, Mapping):
            raise InvalidInputError(f"settings to import must be a mapping of keys to values, got a "
                                    f"{type(values).__name__}")
        return svc.import_values(self._db, self._store, values, dry_run=dry_run, note=note, author=by)


class Docs(_Part):
    """Reference documents: ingest files, list, show and remove them."""

    def ingest(self, paths: str | os.PathLike[str] | Sequence[str | Any], *, include: Sequence[str] = (),
               exclude: Sequence[str] = (),
               tags: Sequence[str] = (), meta: Mapping[str, Any] | None = None, passwords: Sequence[str] = (),
               password_map: Mapping[str, str] | None = None, force: bool = False, dry_run: bool = False,
               stdin: Callable[[int], bytes] | None = None, stdin_name: str | None = None,
               follow_symlinks: bool = False, confine_to: Sequence[Any] = (), max_file_size: int | str | None = None,
               sync: bool = False, progress: Progress | None = None) -> IngestSummary:
        """Load, chunk, embed and store files, directories (recursive) and globs; "-" reads `stdin()`.
        Unchanged files are skipped; each document is written in one transaction. File links that lead out of
        a directory being walked are skipped unless `follow_symlinks`; with `confine_to`, nothing outside
        those directories is read. A file over `max_file_size` (bytes or "64MB"; default the configured
        max_input_size) fails alone; `stdin(limit)` must return at most limit + 1 bytes. With `sync`, documents
        from under the named directories whose files are gone are removed afterwards (`summary.removed`).
        `paths` (and `include`, `exclude`, `tags`, `passwords`, `confine_to`) may be one string or path."""
        from pathlib import Path

        from ltm_cli.errors import InvalidInputError
        from ltm_cli.parsing import check_range, parse_size

        # One string is one path: iterating it would ingest "/" for "/some/file.pdf" (one path per character).
        paths, include, exclude, tags, passwords, confine_to = (
            _as_list(v) for v in (paths, include, exclude, tags, passwords, confine_to))
        if not paths:
            raise InvalidInputError("no path to ingest")
        if any(not str(p).strip() for p in paths):  # Path("") is the current directory, not "nothing"
            raise InvalidInputError("an empty path was given", hint="name a file, a directory, a glob, or - (stdin)")

        limit = parse_size(max_file_size, "--max-file-size") if max_file_size is not None \
            else self._memory.config.max_input_size
        check_range("--max-file-size", limit, 1)

        from ltm_cli.services.ingest import IngestOptions, Ingestor

        options = IngestOptions(include=tuple(include), exclude=tuple(exclude), force=force, dry_run=dry_run,
                                tags=tuple(tags), meta=parse_meta(meta), passwords=tuple(passwords),
                                password_map=dict(password_map or {}),
                                stdin_name=stdin_name or ("stdin" if "-" in paths else None),
                                follow_symlinks=follow_symlinks, confine_to=tuple(Path(p) for p in confine_to),
                                max_file_size=limit, sync=sync)
        return Ingestor(self._db, self._memory.config, self._memory.embedder, self._store, options, progress,
                        stdin=stdin).run([str(p) for p in paths])

    def list(self, *, tag: str | None = None, source: str | None = None,
             limit: int | None = None) -> list[DocumentInfo]:
        from ltm_cli.services import documents as svc

        check_range("limit", limit, 1)
        return svc.list_documents(self._db, self._store, tag=tag, source=source, limit=limit)

    def show(self, ref: str | int) -> DocumentDetail:
        """One document by id, source path or a glob matching one source, with its chunks."""
        from ltm_cli.services import documents as svc

        return svc.show(self._db, self._store, str(ref))

    def rm(self, refs: Sequence[str | int]) -> list[str]:
        from ltm_cli.services import documents as svc

        return svc.remove(self._db, self._store, [str(r) for r in refs])


class History(_Part):
    """Conversation memory: turns, the tools they called, and how each action turned out."""

    def add(self, content: str = "", *, role: str = "user", conversation: str | None = None, new: bool = False,
            title: str | None = None, name: str | None = None, tool: str | None = None, args: Any = None,
            result: str | None = None, outcome: str | None = None, note: str | None = None,
            meta: Mapping[str, Any] | None = None, at: Time = None) -> Added:
        """Append one turn to `conversation` (made on first use), or to a new one with `new=True`.
        It is embedded before this returns, so search finds it at once."""
        from ltm_cli.conversations import NewMessage
        from ltm_cli.services import history as svc

        message = NewMessage(role=role, content=content or "", name=name, tool_name=tool, tool_args=args,
                             tool_result=result, outcome=outcome, outcome_note=note, metadata=parse_meta(meta),
                             created_at=parse_time(at))
        return svc.add(self._db, self._memory.embedder, self._store, message, conversation=conversation, new=new,
                       title=title)

    def outcome(self, message_id: int, outcome: str, note: str | None = None) -> MessageInfo:
        """Record how the action of a turn turned out: success, failure, partial or unknown."""
        from ltm_cli.services import history as svc

        check_range("message id", message_id, 1)
        return svc.set_outcome(self._db, self._store, message_id, outcome, note)

    def import_(self, data: str | Sequence[NewConversation], *, name: str = "input",
                progress: Progress | None = None) -> ImportSummary:
        """Import conversations: file text (OpenAI chat JSON/JSONL or a `role: text` transcript) or parsed
        ones. Idempotent: re-importing adds nothing, a conversation that grew gets its new turns."""
        from ltm_cli.services import history as svc

        problems: list = []
        if isinstance(data, str):
            from ltm_cli.conversations import parse

            conversations, problems = parse(data, name)
        else:
            conversations = list(data)
        return svc.import_conversations(self._db, self._memory.embedder, self._store, conversations, problems,
                                        progress)

    def export(self, conversation: str | None = None) -> list[dict[str, Any]]:
        from ltm_cli.services import history as svc

        return svc.export(self._db, self._store, conversation)

    def list(self, *, conversation: str | None = None, since: Time = None, until: Time = None,
             role: str | None = None, outcome: str | None = None, limit: int | None = 50,
             undistilled: bool = False) -> list[MessageInfo]:
        """The most recent `limit` messages matching the filters (None: all), oldest first."""
        from ltm_cli.services import history as svc

        check_range("limit", limit, 1)
        return svc.list_messages(self._db, self._store, conversation=conversation, since=parse_time(since),
                                 until=parse_time(until), role=role, outcome=outcome, limit=limit,
                                 undistilled=undistilled)

    def mark_distilled(self, message_ids: Sequence[int]) -> int:
        from ltm_cli.services import history as svc

        return svc.mark_distilled(self._db, self._store, message_ids)

    def distill(self, *, conversation: str | None = None, since: Time = None, dry_run: bool = False,
                limit: int | None = None) -> DistillSummary:
        """Turn conversation turns into notes with a chat model (LTM_CHAT_BASE_URL, LTM_CHAT_MODEL): each turn
        once; the model's proposals are validated before anything is written."""
        from ltm_cli.services.distill import distill

        check_range("limit", limit, 1)
        return distill(self._memory, conversation=conversation, since=parse_time(since), dry_run=dry_run,
                       limit=limit)

    def conversations(self, *, since: Time = None, limit: int | None = 50) -> list[ConversationInfo]:
        from ltm_cli.services import history as svc

        check_range("limit", limit, 1)
        return svc.list_conversations(self._db, self._store, since=parse_time(since), limit=limit)

    def show(self, conversation: str) -> tuple[ConversationInfo, list[MessageInfo]]:
        from ltm_cli.services import history as svc

        return svc.show(self._db, self._store, conversation)

    def search(self, query: str, *, mode: str = "hybrid", limit: int = 10, conversation: str | None = None,
               role: str | None = None, outcome: str | None = None, meta: Mapping[str, Any] | None = None,
               since: Time = None, until: Time = None, context: int = 1, diverse: bool = False) -> list[Hit]:
        """Search past turns; `outcome="failure"` answers "what went wrong last time I did X"."""
        return self._memory.search(query, kind="history", mode=mode, limit=limit, meta=meta, since=since,
                                   until=until, role=role, outcome=outcome, conversation=conversation,
                                   context=context, diverse=diverse)

    def rm(self, conversations: Sequence[str]) -> list[str]:
        from ltm_cli.services import history as svc

        return svc.remove(self._db, self._store, conversations)

    def prune(self, before: Time, *, dry_run: bool = False) -> list[ConversationInfo]:
        """Delete whole conversations last active before `before` (never half a conversation)."""
        from ltm_cli.errors import InvalidInputError
        from ltm_cli.services import history as svc

        cutoff = parse_time(before)
        if cutoff is None:
            raise InvalidInputError("prune needs a time: --before")
        return svc.prune(self._db, self._store, cutoff, dry_run=dry_run)

    def embed(self) -> int:
        """Embed messages that have no vector for the current embedder (after switching models)."""
        from ltm_cli.services import history as svc

        return svc.embed_missing(self._db, self._memory.embedder, self._store)


class Notes(_Part):
    """Durable facts and lessons, versioned by validity and traceable to the turns and documents behind them."""

    def add(self, text: str, *, about: str | None = None, tags: Sequence[str] = (),
            meta: Mapping[str, Any] | None = None, sources: Sequence[int] = (), documents: Sequence[int] = (),
            by: str | None = None, force: bool = False) -> Remembered:
        """Remember a fact (`sources`: message ids it came from). A near-identical live note about the same
        subject is returned instead (`created` False) unless `force`; `similar` lists the closest live notes."""
        from ltm_cli.services import notes as svc

        return svc.add(self._db, self._memory.embedder, self._store, text, about=about, tags=tags,
                       metadata=parse_meta(meta), messages=sources, documents=documents, author=by, force=force)

    def supersede(self, note_id: int, text: str, *, by: str | None = None, about: str | None = None,
                  tags: Sequence[str] | None = None, sources: Sequence[int] = (),
                  documents: Sequence[int] = ()) -> tuple[NoteInfo, NoteInfo]:
        """Replace a live note: the old one is closed (valid until now) and points at the new one."""
        from ltm_cli.services import notes as svc

        return svc.supersede(self._db, self._memory.embedder, self._store, note_id, text, author=by, about=about,
                             tags=tags, messages=sources, documents=documents)

    def forget(self, note_id: int, reason: str, *, purge: bool = False) -> NoteInfo:
        from ltm_cli.services import notes as svc

        return svc.forget(self._db, self._store, note_id, reason, purge=purge)

    def list(self, *, about: str | None = None, tag: str | None = None, all: bool = False, at: Time = None,
             limit: int | None = None) -> list[NoteInfo]:
        """Live notes, newest first; `all` includes closed ones; `at` shows what was believed then."""
        from ltm_cli.services import notes as svc

        check_range("limit", limit, 1)
        return svc.list_notes(self._db, self._store, about=about, tag=tag, include_closed=all,
                              at=parse_time(at), limit=limit)

    def show(self, note_id: int) -> NoteDetail:
        from ltm_cli.services import notes as svc

        return svc.show(self._db, self._store, note_id)
