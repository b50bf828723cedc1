"""Embedders behind one small interface, chosen by name from the registry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ltm_cli.embedders.registry import EMBEDDER_NAMES, EMBEDDERS, embedder_factory

if TYPE_CHECKING:
    from ltm_cli.config import Config
    from ltm_cli.embedders.base import Embedder

__all__ = ["EMBEDDERS", "EMBEDDER_NAMES", "embedder_factory", "get_embedder"]


def get_embedder(config: Config) -> Embedder:
    """Build the configured embedder; nothing heavy is imported until it embeds."""
    return embedder_factory(config.embedder_name)(config)
