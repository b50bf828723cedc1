"""Keep tsvectors in the row: STORAGE MAIN on chunks.tsv and messages.tsv.

A 1.2 KB chunk's tsvector is about 1.7 KB, so the row passed the 2 KB TOAST threshold and PostgreSQL moved the
tsvector out of line; BM25 scoring then paid a TOAST fetch per candidate row. Measured at 100k chunks: reading
the tsvectors of 3,000 candidate rows took 39 ms out of line and 4 ms in the row. With MAIN the text column (the
one only the final results need) is moved out first. Applies to rows written from now on (a re-ingest, or
VACUUM FULL, rewrites older ones).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE chunks ALTER COLUMN tsv SET STORAGE MAIN")
    op.execute("ALTER TABLE messages ALTER COLUMN tsv SET STORAGE MAIN")


def downgrade() -> None:
    op.execute("ALTER TABLE chunks ALTER COLUMN tsv SET STORAGE EXTENDED")
    op.execute("ALTER TABLE messages ALTER COLUMN tsv SET STORAGE EXTENDED")
