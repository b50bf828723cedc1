"""SQLAlchemy 2 typed models of schema v1; the tables themselves are created only by migrations."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from pgvector.sqlalchemy import HALFVEC
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Computed,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy import (
    text as sql_text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TSVECTOR, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ltm_cli.storage.names import CHUNK_TSV, MESSAGE_TSV, NOTE_TSV, OUTCOMES, ROLES, TS_CONFIG  # noqa: F401 (re-export)

# Indexes ltm builds at run time, one partial HNSW index per embedding space (storage.vectors.index_name):
# which exist depends on the data, so they are not declared here and autogenerate must leave them alone.
RUNTIME_INDEX_PREFIX = "embeddings_hnsw_space_"


def _now() -> Any:
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


class Base(DeclarativeBase):
    pass


class Store(Base):
    """A named memory store: every row below belongs to one."""

    __tablename__ = "stores"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    created_at: Mapped[dt.datetime] = _now()
    metadata_: Mapped[dict] = mapped_column("metadata", JSONB, server_default=sql_text("'{}'::jsonb"))


class EmbeddingSpace(Base):
    """A (provider, model, dimension): vectors of different spaces are never compared."""

    __tablename__ = "embedding_spaces"
    __table_args__ = (UniqueConstraint("provider", "model", "dim"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    provider: Mapped[str] = mapped_column(Text)
    model: Mapped[str] = mapped_column(Text)
    dim: Mapped[int] = mapped_column(Integer, CheckConstraint("dim > 0 AND dim <= 4000"))
    created_at: Mapped[dt.datetime] = _now()


class Embedding(Base):
    """One vector per (space, hash of the embedded text): identical text is embedded once, for every store.

    The column is an untyped halfvec so spaces of any dimension share the table; each space has its own
    partial HNSW index over `embedding::halfvec(dim)`.
    """

    __tablename__ = "embeddings"
    space_id: Mapped[int] = mapped_column(
        ForeignKey("embedding_spaces.id", ondelete="CASCADE"), primary_key=True
    )
    content_hash: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    # HALFVEC() with no dimension renders `halfvec`, the column 0001 creates; the model must say so or
    # autogenerate proposes turning it into text. All vector I/O still goes through storage.vectors.
    embedding: Mapped[Any] = mapped_column("embedding", HALFVEC())


class Setting(Base):
    """Append-only versions of key -> JSON value; the highest version of a key is the active one."""

    __tablename__ = "settings"
    __table_args__ = (
        UniqueConstraint("store_id", "key", "version"),
        Index("ix_settings_store_key_version", "store_id", "key", sql_text("version DESC")),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer)
    value: Mapped[Any] = mapped_column(JSONB, nullable=True)
    deleted: Mapped[bool] = mapped_column(Boolean, server_default=sql_text("false"))
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    author: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.clock_timestamp()
    )


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (UniqueConstraint("store_id", "external_id"),
                      Index("ix_conversations_store_updated", "store_id", "updated_at"))
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id", ondelete="CASCADE"))
    title: Mapped[str | None] = mapped_column(Text, nullable=True)
    external_id: Mapped[str | None] = mapped_column(Text, nullable=True)  # makes imports idempotent
    metadata_: Mapped[dict] = mapped_column("metadata", JSONB, server_default=sql_text("'{}'::jsonb"))
    created_at: Mapped[dt.datetime] = _now()
    updated_at: Mapped[dt.datetime] = _now()


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("conversation_id", "seq"),
        CheckConstraint(f"role IN ({', '.join(repr(r) for r in ROLES)})", name="ck_messages_role"),
        CheckConstraint(f"outcome IN ({', '.join(repr(o) for o in OUTCOMES)})", name="ck_messages_outcome"),
        Index("ix_messages_tsv", "tsv", postgresql_using="gin"),
        Index("ix_messages_store_created", "store_id", "created_at"),
        Index("ix_messages_embed_hash", "embed_hash"),
        Index("ix_messages_store_len", "store_id", "id", postgresql_include=["token_count"]),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    conversation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(Text)
    name: Mapped[str | None] = mapped_column(Text, nullable=True)  # the speaker, OpenAI's `name`
    content: Mapped[str] = mapped_column(Text, server_default=sql_text("''"))
    tool_name: Mapped[str | None] = mapped_column(Text, nullable=True)
    tool_args: Mapped[Any] = mapped_column(JSONB, nullable=True)
    tool_result: Mapped[str | None] = mapped_column(Text, nullable=True)
    outcome: Mapped[str | None] = mapped_column(Text, nullable=True)
    outcome_note: Mapped[str | None] = mapped_column(Text, nullable=True)
    metadata_: Mapped[dict] = mapped_column("metadata", JSONB, server_default=sql_text("'{}'::jsonb"))
    embed_hash: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    token_count: Mapped[int] = mapped_column(Integer, server_default=sql_text("0"))
    created_at: Mapped[dt.datetime] = _now()
    tsv: Mapped[Any] = mapped_column(TSVECTOR, Computed(MESSAGE_TSV, persisted=True))
    distilled_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Document(Base):
    __tablename__ = "documents"
    __table_args__ = (UniqueConstraint("store_id", "source"),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[bytes] = mapped_column(LargeBinary)
    media_type: Mapped[str] = mapped_column(Text)
    title: Mapped[str | None] = mapped_column(Text, nullable=True)
    metadata_: Mapped[dict] = mapped_column("metadata", JSONB, server_default=sql_text("'{}'::jsonb"))
    tags: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=sql_text("'{}'::text[]"))
    created_at: Mapped[dt.datetime] = _now()
    updated_at: Mapped[dt.datetime] = _now()


class Chunk(Base):
    __tablename__ = "chunks"
    __table_args__ = (
        UniqueConstraint("document_id", "ordinal"),
        Index("ix_chunks_tsv", "tsv", postgresql_using="gin"),
        Index("ix_chunks_store", "store_id", "id", postgresql_include=["token_count"]),
        Index("ix_chunks_embed_hash", "embed_hash"),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id", ondelete="CASCADE"))
    ordinal: Mapped[int] = mapped_column(Integer)
    heading: Mapped[str | None] = mapped_column(Text, nullable=True)  # title + heading path, weighted in FTS
    text: Mapped[str] = mapped_column(Text)
    location: Mapped[dict] = mapped_column(JSONB, server_default=sql_text("'{}'::jsonb"))
    token_count: Mapped[int] = mapped_column(Integer)
    embed_hash: Mapped[bytes] = mapped_column(LargeBinary)
    tsv: Mapped[Any] = mapped_column(TSVECTOR, Computed(CHUNK_TSV, persisted=True))


class Note(Base):
    """A durable fact or lesson, never edited in place: superseding closes it (valid_until, superseded_by) and
    opens its successor; forgetting closes it with a reason; only a purge deletes."""

    __tablename__ = "notes"
    __table_args__ = (
        Index("ix_notes_tsv", "tsv", postgresql_using="gin"),
        Index("ix_notes_store_about", "store_id", "about"),
        Index("ix_notes_store_len", "store_id", "id", postgresql_include=["token_count"]),
        Index("ix_notes_embed_hash", "embed_hash"),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id", ondelete="CASCADE"))
    text: Mapped[str] = mapped_column(Text)
    about: Mapped[str | None] = mapped_column(Text, nullable=True)
    tags: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=sql_text("'{}'::text[]"))
    metadata_: Mapped[dict] = mapped_column("metadata", JSONB, server_default=sql_text("'{}'::jsonb"))
    source_messages: Mapped[list[int]] = mapped_column(ARRAY(BigInteger), server_default=sql_text("'{}'::bigint[]"))
    source_documents: Mapped[list[int]] = mapped_column(ARRAY(BigInteger),
                                                        server_default=sql_text("'{}'::bigint[]"))
    author: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.clock_timestamp())
    valid_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    superseded_by: Mapped[int | None] = mapped_column(ForeignKey("notes.id", ondelete="SET NULL"), nullable=True)
    closed_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    embed_hash: Mapped[bytes] = mapped_column(LargeBinary)
    token_count: Mapped[int] = mapped_column(Integer, server_default=sql_text("0"))
    tsv: Mapped[Any] = mapped_column(TSVECTOR, Computed(NOTE_TSV, persisted=True))
