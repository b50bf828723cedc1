"""ltm: long-term memory for LLMs in PostgreSQL + pgvector."""

__version__ = "0.1.0"
