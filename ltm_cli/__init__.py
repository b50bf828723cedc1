"""ltm: long-term memory for LLMs in PostgreSQL + pgvector."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Memory", "__version__"]

if TYPE_CHECKING:
    from ltm_cli.memory import Memory


def __getattr__(name: str) -> Any:
    # `from ltm_cli import Memory` without making `ltm --version` import the library behind it.
    if name == "Memory":
        from ltm_cli.memory import Memory

        return Memory
    raise AttributeError(f"module 'ltm_cli' has no attribute {name!r}")
