"""Embedders behind one small interface, chosen by name."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ltm_cli.config import Config
    from ltm_cli.embedders.base import Embedder

EMBEDDER_NAMES = ("local", "openai", "hash")


def get_embedder(config: Config) -> Embedder:
    """Build the configured embedder; nothing heavy is imported until it embeds."""
    name = config.embedder_name
    if name == "hash":
        from ltm_cli.embedders.hashing import HashEmbedder

        return HashEmbedder(dim=config.embedding_dimensions or 384)
    if name == "local":
        from ltm_cli.embedders.local import LocalEmbedder

        return LocalEmbedder(cache_dir=config.home_path / "cache")
    if name == "openai":
        from ltm_cli.embedders.openai import OpenAIEmbedder

        return OpenAIEmbedder.from_config(config)
    from ltm_cli.errors import ConfigError

    raise ConfigError(f"unknown embedder {name!r}", hint=f"choose one of: {', '.join(EMBEDDER_NAMES)}")
