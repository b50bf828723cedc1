"""The embedders ltm knows, by name; each factory imports its embedder (and numpy, onnxruntime, httpx) only
when called, so config validation can read the names without loading any of them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from ltm_cli.errors import ConfigError

if TYPE_CHECKING:  # config imports this module: importing config back at run time would be a cycle
    from ltm_cli.config import Config
    from ltm_cli.embedders.base import Embedder

EmbedderFactory = Callable[["Config"], "Embedder"]


def _local(config: Config) -> Embedder:
    from ltm_cli.embedders.local import LocalEmbedder

    return LocalEmbedder(cache_dir=config.home_path / "cache")


def _openai(config: Config) -> Embedder:
    from ltm_cli.embedders.openai import OpenAIEmbedder

    return OpenAIEmbedder.from_config(config)


def _hash(config: Config) -> Embedder:
    from ltm_cli.embedders.hashing import HashEmbedder

    return HashEmbedder(dim=config.embedding_dimensions or 384)


EMBEDDERS: Mapping[str, EmbedderFactory] = {"local": _local, "openai": _openai, "hash": _hash}
EMBEDDER_NAMES: tuple[str, ...] = tuple(EMBEDDERS)


def embedder_factory(name: str) -> EmbedderFactory:
    """The factory registered under `name`; ConfigError naming the choices for any other name."""
    try:
        return EMBEDDERS[name]
    except KeyError:
        raise ConfigError(f"unknown embedder {name!r}", hint=f"choose one of: {', '.join(EMBEDDER_NAMES)}") from None
