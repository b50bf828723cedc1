"""The exception hierarchy; each class carries the exit code the CLI uses for it."""

from __future__ import annotations


class ExitCode:
    OK = 0
    FAILURE = 1  # generic failure, or some items of a batch failed
    USAGE = 2  # bad flags or arguments (Click's own code)
    NOT_FOUND = 3
    INVALID_INPUT = 4
    DATABASE_UNAVAILABLE = 5
    EMBEDDING_ERROR = 6
    CONFLICT = 7
    INTERRUPTED = 130


class LtmError(Exception):
    """Base class: a message meant for the user, and an exit code."""

    exit_code = ExitCode.FAILURE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class NotFoundError(LtmError):
    exit_code = ExitCode.NOT_FOUND


class InvalidInputError(LtmError):
    exit_code = ExitCode.INVALID_INPUT


class ConfigError(InvalidInputError):
    pass


class DatabaseUnavailableError(LtmError):
    exit_code = ExitCode.DATABASE_UNAVAILABLE


class SchemaError(DatabaseUnavailableError):
    """The database is reachable but its schema is missing or not at the version this ltm needs."""


class EmbeddingError(LtmError):
    exit_code = ExitCode.EMBEDDING_ERROR


class ConflictError(LtmError):
    exit_code = ExitCode.CONFLICT


def classify(exc: BaseException) -> tuple[int, str]:
    """Any exception as (exit code, one-line message): LtmError as it says, database and OS errors by kind.
    The CLI and the MCP server report errors through this, so both faces say the same thing."""
    if isinstance(exc, LtmError):
        return exc.exit_code, exc.message
    module = type(exc).__module__
    if module.startswith(("sqlalchemy", "psycopg2")):
        orig = getattr(exc, "orig", exc)
        text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(exc).__name__
        if type(exc).__name__ == "OperationalError":
            return ExitCode.DATABASE_UNAVAILABLE, f"database error: {text}"
        return ExitCode.FAILURE, f"database error: {text}"
    if isinstance(exc, OSError):
        return ExitCode.FAILURE, f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc)
    # Safety nets for input that gets past the checks: the user's input is at fault, not ltm.
    if isinstance(exc, RecursionError):
        return ExitCode.INVALID_INPUT, "input is nested too deeply to read"
    if isinstance(exc, UnicodeError):
        return ExitCode.INVALID_INPUT, f"input is not valid Unicode text ({exc.reason})"
    if isinstance(exc, ValueError) and "NUL" in str(exc):
        return ExitCode.INVALID_INPUT, "input contains a NUL character, which PostgreSQL cannot store"
    return ExitCode.FAILURE, f"unexpected error: {type(exc).__name__}: {exc}"
