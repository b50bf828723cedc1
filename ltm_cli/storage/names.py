"""Names and SQL expressions the schema and the queries share, importable without SQLAlchemy's ORM
(which costs ~80 ms of start-up that `ltm search` does not need)."""

from __future__ import annotations

# Full-text configuration for every tsvector: portable (no custom dictionaries) to managed PostgreSQL.
TS_CONFIG = "english"
ROLES = ("user", "assistant", "system", "tool")
OUTCOMES = ("success", "failure", "partial", "unknown")

CHUNK_TSV = (
    f"setweight(to_tsvector('{TS_CONFIG}'::regconfig, coalesce(heading, '')), 'A') || "
    f"setweight(to_tsvector('{TS_CONFIG}'::regconfig, text), 'D')"
)
MESSAGE_TSV = (
    f"setweight(to_tsvector('{TS_CONFIG}'::regconfig, coalesce(name, '')), 'A') || "
    f"to_tsvector('{TS_CONFIG}'::regconfig, coalesce(content, '') || ' ' || coalesce(tool_name, '') "
    f"|| ' ' || coalesce(tool_result, ''))"
)
NOTE_TSV = (
    f"setweight(to_tsvector('{TS_CONFIG}'::regconfig, replace(coalesce(about, ''), '.', ' ')), 'A') || "
    f"to_tsvector('{TS_CONFIG}'::regconfig, text)"
)
