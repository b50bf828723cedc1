"""Resolves flags > environment (LTM_*) > config file (TOML) > defaults into one frozen Config."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ltm_cli.embedders.registry import embedder_factory
from ltm_cli.errors import ConfigError

APP_NAME = "ltm"


@dataclass(frozen=True)
class Option:
    """One configuration value: its name, environment variables, type and default."""

    name: str
    env: tuple[str, ...]
    type: type
    default: Any
    help: str
    secret: bool = False


OPTIONS: tuple[Option, ...] = (
    Option("database_url", ("LTM_DATABASE_URL",), str, None,
           "PostgreSQL URL (with pgvector). Unset: ltm's own embedded server in LTM_HOME."),
    Option("home", ("LTM_HOME",), str, None, "Where ltm keeps its embedded database and state."),
    Option("store", ("LTM_STORE",), str, "default", "The memory store commands work on."),
    Option("embedder", ("LTM_EMBEDDER",), str, None,
           "Embedder: local (offline MiniLM), openai (OpenAI-compatible API) or hash (tests only). "
           "Default: openai when LTM_EMBEDDING_BASE_URL is set, else local."),
    Option("embedding_model", ("LTM_EMBEDDING_MODEL",), str, None,
           "Model name for the openai embedder (default text-embedding-3-small)."),
    Option("embedding_dimensions", ("LTM_EMBEDDING_DIMENSIONS",), int, None,
           "Vector size to request from the openai embedder, or the hash embedder's size."),
    Option("embedding_base_url", ("LTM_EMBEDDING_BASE_URL",), str, None,
           "Base URL of an OpenAI-compatible embeddings API."),
    Option("embedding_api_key", ("LTM_EMBEDDING_API_KEY", "OPENAI_API_KEY"), str, None,
           "API key for the openai embedder.", secret=True),
    Option("embedding_timeout", ("LTM_EMBEDDING_TIMEOUT",), float, 120.0,
           "Seconds an embedding request may take, retries included, before ltm gives up."),
    Option("chunk_tokens", ("LTM_CHUNK_TOKENS",), int, 200, "Target chunk size in tokens."),
    Option("chunk_overlap", ("LTM_CHUNK_OVERLAP",), int, 32, "Tokens shared by neighbouring chunks."),
    Option("chat_base_url", ("LTM_CHAT_BASE_URL",), str, None,
           "Base URL of an OpenAI-compatible chat API, for `ltm history distill` (off unless set)."),
    Option("chat_model", ("LTM_CHAT_MODEL",), str, None, "The chat model `ltm history distill` asks."),
    Option("chat_api_key", ("LTM_CHAT_API_KEY",), str, None,
           "API key for the chat model (default: the embedding API key).", secret=True),
    Option("distill_prompt", ("LTM_DISTILL_PROMPT",), str, None,
           "A file that replaces the distill prompt shipped in ltm_cli/prompts/distill.md."),
    Option("max_input_size", ("LTM_MAX_INPUT_SIZE",), int, 64 << 20,
           "Largest file ingest reads, and most bytes read from standard input (e.g. 64MB, 1GB)."),
)
OPTIONS_BY_NAME = {o.name: o for o in OPTIONS}


@dataclass(frozen=True)
class Config:
    database_url: str | None = None
    home: str | None = None
    store: str = "default"
    embedder: str | None = None
    embedding_model: str | None = None
    embedding_dimensions: int | None = None
    embedding_base_url: str | None = None
    embedding_api_key: str | None = None
    embedding_timeout: float = 120.0
    chunk_tokens: int = 200
    chunk_overlap: int = 32
    chat_base_url: str | None = None
    chat_model: str | None = None
    chat_api_key: str | None = None
    distill_prompt: str | None = None
    max_input_size: int = 64 << 20
    config_file: str | None = None
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def home_path(self) -> Path:
        if self.home:
            return Path(self.home).expanduser()
        import platformdirs

        return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))

    @property
    def embedder_name(self) -> str:
        if self.embedder:
            return self.embedder
        return "openai" if self.embedding_base_url else "local"

    def replace(self, **changes: Any) -> Config:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        sources = dict(self.sources)
        for key, value in changes.items():
            values[key] = value
            sources[key] = "override"
        values["sources"] = sources
        return Config(**values)


def default_config_file(environ: Mapping[str, str]) -> Path:
    if environ.get("LTM_CONFIG"):
        return Path(environ["LTM_CONFIG"]).expanduser()
    import platformdirs

    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)) / "config.toml"


def _read_config_file(path: Path, required: bool) -> dict[str, Any]:
    if not path.exists():
        if required:
            raise ConfigError(f"config file not found: {path}")
        return {}
    import tomllib

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    unknown = sorted(set(data) - set(OPTIONS_BY_NAME))
    if unknown:
        raise ConfigError(
            f"unknown key(s) in {path}: {', '.join(unknown)}",
            hint=f"known keys: {', '.join(OPTIONS_BY_NAME)}",
        )
    return data


def _coerce(option: Option, value: Any, origin: str) -> Any:
    if value is None or isinstance(value, option.type):
        return value
    if option.type is float and isinstance(value, int):
        return float(value)
    if option.name.endswith("_size") and isinstance(value, str):
        from ltm_cli.parsing import parse_size

        return parse_size(value, option.name)
    try:
        return option.type(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{option.name} from {origin} must be {option.type.__name__}, got {value!r}") from exc


def load_config(
    flags: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Resolve every option; `sources` says where each value came from."""
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    unknown = sorted(set(flags) - set(OPTIONS_BY_NAME))
    if unknown:  # Memory.open(chunk_tokenz=5) must not be silently ignored
        import difflib

        close = difflib.get_close_matches(unknown[0], list(OPTIONS_BY_NAME), n=1)
        raise ConfigError(f"unknown option {unknown[0]!r}",
                          hint=f"did you mean {close[0]!r}?" if close else "see `ltm config show` for the options")
    environ = os.environ if environ is None else environ
    path = default_config_file(environ)
    file_values = _read_config_file(path, required=bool(environ.get("LTM_CONFIG")))

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for option in OPTIONS:
        if option.name in flags:
            values[option.name] = _coerce(option, flags[option.name], "the command line")
            sources[option.name] = "flag"
            continue
        env_name = next((e for e in option.env if environ.get(e)), None)
        if env_name:
            values[option.name] = _coerce(option, environ[env_name], env_name)
            sources[option.name] = f"env {env_name}"
        elif option.name in file_values:
            values[option.name] = _coerce(option, file_values[option.name], str(path))
            sources[option.name] = f"file {path}"
        else:
            values[option.name] = option.default
            sources[option.name] = "default"
    config = Config(**values, config_file=str(path), sources=sources)
    validate(config)
    return config


def validate(config: Config) -> None:
    embedder_factory(config.embedder_name)  # raises ConfigError naming the choices for an unknown embedder
    if config.chunk_tokens < 16:
        raise ConfigError("chunk_tokens must be at least 16")
    if not 0 <= config.chunk_overlap < config.chunk_tokens // 2:
        raise ConfigError("chunk_overlap must be at least 0 and under half of chunk_tokens")
    if config.database_url and not config.database_url.startswith(("postgresql", "postgres://")):
        raise ConfigError("database URL must start with postgresql:// (PostgreSQL with pgvector)")
    if config.database_url:
        from urllib.parse import urlsplit

        try:
            urlsplit(config.database_url).port  # noqa: B018 - parses host and port, raising on a malformed one
        except ValueError as exc:
            raise ConfigError(f"invalid database URL {mask_url(config.database_url)}: {exc}") from None
    if config.embedding_dimensions is not None and not 1 <= config.embedding_dimensions <= 4000:
        raise ConfigError(f"embedding_dimensions must be from 1 to 4000 (pgvector's halfvec), got "
                          f"{config.embedding_dimensions}")
    if config.max_input_size < 1:
        raise ConfigError("max_input_size must be at least 1 byte")


def describe(config: Config) -> list[dict[str, Any]]:
    """Every option with its value (secrets masked) and where it came from."""
    rows = []
    for option in OPTIONS:
        value = getattr(config, option.name)
        if option.secret and value:
            value = "****"
        elif option.name == "database_url" and value:
            value = mask_url(value)
        rows.append({"name": option.name, "value": value, "source": config.sources.get(option.name, "default"),
                     "env": option.env[0], "help": option.help})
    rows.append({"name": "embedder (effective)", "value": config.embedder_name, "source": "derived",
                 "env": "", "help": "The embedder ltm will use."})
    rows.append({"name": "home (effective)", "value": str(config.home_path), "source": "derived",
                 "env": "", "help": "Directory of the embedded server."})
    rows.append({"name": "config_file", "value": config.config_file, "source": "LTM_CONFIG or default",
                 "env": "LTM_CONFIG", "help": "TOML file read for defaults."})
    return rows


def mask_url(url: str) -> str:
    """Hide every password a PostgreSQL URL can carry, as psql and pgcli do: the one in user:password@, and
    libpq's password= and sslpassword= query parameters (which libpq accepts too)."""
    import re

    masked = re.sub(r"(?i)([?&](?:ssl)?password=)[^&#]*", r"\1****", url)
    match = re.match(r"^([a-z0-9+.-]+://)([^@/?#]*)@", masked, re.I)
    if match and ":" in match.group(2):
        user = match.group(2).split(":", 1)[0]
        masked = f"{match.group(1)}{user}:****@{masked[match.end():]}"
    return masked
