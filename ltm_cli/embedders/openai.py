"""OpenAI-compatible embeddings API (OpenAI, or any local server speaking it) over plain httpx.

httpx rather than the openai SDK: the SDK costs ~0.6 s to import and hides its retry policy, while this
client needs its own: batches by size and tokens, concurrent batches, retries on 429/5xx with backoff,
jitter and Retry-After, and a bounded total time."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from ltm_cli.embedders.base import count_tokens, normalize_rows
from ltm_cli.errors import ConfigError, EmbeddingError

if TYPE_CHECKING:
    from ltm_cli.config import Config

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "text-embedding-3-small"
KNOWN_DIMS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}
MAX_BATCH_INPUTS = 256
MAX_BATCH_TOKENS = 100_000
RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class OpenAIEmbedder:
    provider = "openai"
    max_tokens = 8000  # OpenAI embedding models take 8,191 tokens; our count over-estimates theirs

    def __init__(self, *, api_key: str | None, model: str = DEFAULT_MODEL, base_url: str = DEFAULT_BASE_URL,
                 dimensions: int | None = None, timeout: float = 120.0, concurrency: int = 4,
                 max_backoff: float = 20.0) -> None:
        self.api_key = api_key
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.dimensions = dimensions
        self.timeout = timeout
        self.concurrency = concurrency
        self.max_backoff = max_backoff
        self.batch_size = MAX_BATCH_INPUTS
        self._dim = dimensions or KNOWN_DIMS.get(model)
        self._client: Any = None
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: Config) -> OpenAIEmbedder:
        base_url = config.embedding_base_url or DEFAULT_BASE_URL
        if not config.embedding_api_key and base_url == DEFAULT_BASE_URL:
            raise ConfigError("the openai embedder needs an API key",
                              hint="set OPENAI_API_KEY or LTM_EMBEDDING_API_KEY, or LTM_EMBEDDER=local")
        return cls(api_key=config.embedding_api_key, model=config.embedding_model or DEFAULT_MODEL,
                   base_url=base_url, dimensions=config.embedding_dimensions, timeout=config.embedding_timeout)

    @property
    def dim(self) -> int:
        if self._dim is None:  # an unknown model on a compatible server: ask it once
            self._dim = int(self._request(["dimension probe"], time.monotonic() + self.timeout).shape[1])
        return self._dim

    def _http(self) -> Any:
        with self._lock:
            if self._client is None:
                import httpx

                headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
                self._client = httpx.Client(base_url=self.base_url, headers=headers,
                                            timeout=httpx.Timeout(min(60.0, self.timeout), connect=10.0))
            return self._client

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        deadline = time.monotonic() + self.timeout
        batches = self._batches(list(texts))
        if len(batches) == 1 or self.concurrency == 1:
            parts = [self._request([texts[i] for i in batch], deadline) for batch in batches]
        else:
            with ThreadPoolExecutor(min(self.concurrency, len(batches))) as pool:
                parts = list(pool.map(lambda b: self._request([texts[i] for i in b], deadline), batches))
        out = np.zeros((len(texts), parts[0].shape[1]), dtype=np.float32)
        for batch, part in zip(batches, parts, strict=True):
            out[batch] = part
        if self._dim is None:
            self._dim = out.shape[1]
        return normalize_rows(out)

    def _batches(self, texts: list[str]) -> list[list[int]]:
        tokens = count_tokens(texts)
        batches: list[list[int]] = []
        current: list[int] = []
        size = 0
        for index, n in enumerate(tokens):
            if current and (len(current) >= MAX_BATCH_INPUTS or size + n > MAX_BATCH_TOKENS):
                batches.append(current)
                current, size = [], 0
            current.append(index)
            size += n
        if current:
            batches.append(current)
        return batches

    def _request(self, inputs: list[str], deadline: float) -> np.ndarray:
        import httpx

        payload: dict[str, Any] = {"model": self.model, "input": inputs, "encoding_format": "float"}
        if self.dimensions:
            payload["dimensions"] = self.dimensions
        attempt = 0
        last = "no attempt"
        while True:
            attempt += 1
            try:
                response = self._http().post("/embeddings", json=payload)
            except httpx.HTTPError as exc:
                last, retry_after = f"{type(exc).__name__}: {exc}", None
            else:
                if response.status_code == 200:
                    return self._parse(response, len(inputs))
                last = f"HTTP {response.status_code}: {_error_text(response)}"
                if response.status_code not in RETRY_STATUS:
                    raise EmbeddingError(f"embedding request failed ({last})", hint=_hint(response.status_code))
                retry_after = _retry_after(response)
            backoff = min(self.max_backoff, 0.5 * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
            wait = max(backoff, retry_after or 0.0)
            if time.monotonic() + wait > deadline:
                raise EmbeddingError(f"embedding API still failing after {attempt} attempt(s) and "
                                     f"{self.timeout:.0f}s ({last})",
                                     hint="raise LTM_EMBEDDING_TIMEOUT or check the provider's status")
            time.sleep(wait)

    def _parse(self, response: Any, expected: int) -> np.ndarray:
        try:
            data = sorted(response.json()["data"], key=lambda item: item["index"])
            matrix = np.asarray([item["embedding"] for item in data], dtype=np.float32)
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbeddingError(f"the embedding API sent an unexpected response: {exc}") from exc
        if matrix.ndim != 2 or matrix.shape[0] != expected:
            raise EmbeddingError(f"the embedding API returned {matrix.shape[0]} vectors for {expected} inputs")
        return matrix


def _retry_after(response: Any) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _error_text(response: Any) -> str:
    try:
        body = response.json()
        message = body.get("error", {}).get("message") if isinstance(body, dict) else None
    except ValueError:
        message = None
    return (message or response.text or "").strip().splitlines()[0][:200] if (message or response.text) else ""


def _hint(status: int) -> str | None:
    return {401: "check OPENAI_API_KEY / LTM_EMBEDDING_API_KEY", 403: "the key lacks access to this model",
            404: "check LTM_EMBEDDING_BASE_URL and LTM_EMBEDDING_MODEL"}.get(status)
