"""Search and recall on real fixtures: ranking, filters, output formats, plans and the BM25 arithmetic."""

from __future__ import annotations

import json
import math
import os

import pytest

from tests.conftest import SHARED_DATA, run_ltm

BASHREF = SHARED_DATA / "pdf" / "manuals" / "bashref.pdf"
MODULE_STORE = "search-bashref"


@pytest.fixture(scope="module")
def bashref(ltm_home, tmp_path_factory):
    """The 214-page Bash manual ingested once (hash embedder) into a store the tests here share."""
    if not BASHREF.exists():
        pytest.skip("shared data not present")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LTM_")}
    env.update(LTM_HOME=str(ltm_home), LTM_EMBEDDER="hash", XDG_CONFIG_HOME=str(tmp_path_factory.mktemp("xdg")))
    done = run_ltm("--store", MODULE_STORE, "ingest", str(BASHREF), env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return MODULE_STORE


@pytest.mark.parametrize(("query", "page"), [("here documents delimiter", 50), ("brace expansion", 32),
                                             ("appending standard output and standard error", 49)])
def test_the_page_that_answers_comes_first(cli, bashref, query, page):
    hits = cli("--store", bashref, "search", query, "--json").json()
    assert hits[0]["location"] == {"page": page}
    assert hits[0]["source"] == str(BASHREF.resolve())  # sources are resolved paths
    human = cli("--store", bashref, "search", query, "-n", "1")
    assert f"page {page}" in human.stdout and "Bash Reference Manual" in human.stdout


def test_jsonl_gives_one_object_per_line_with_the_documented_fields(cli, bashref):
    result = cli("--store", bashref, "search", "brace expansion", "-n", "4", "--jsonl")
    lines = result.stdout.splitlines()
    assert len(lines) == 4
    for rank, line in enumerate(lines, start=1):
        hit = json.loads(line)
        assert hit["rank"] == rank and hit["kind"] == "docs"
        for name in ("id", "score", "text", "snippet", "vector_rank", "vector_score", "keyword_rank",
                     "keyword_score", "document_id", "source", "title", "heading", "location", "tags", "metadata"):
            assert name in hit
        assert hit["vector_rank"] is not None or hit["keyword_rank"] is not None
    assert "«" in json.loads(lines[0])["snippet"]  # matched words marked


def test_recall_stays_within_budget_and_cites_its_passages(cli, bashref):
    result = cli("--store", bashref, "recall", "here documents delimiter", "--budget", "400", "--json")
    assert result.exit_code == 0, result.stderr
    recall = result.json()
    assert recall["tokens"] <= 400
    assert recall["passages"][0]["citation"] == "Bash Reference Manual — page 50"
    assert "# Memory recalled for: here documents delimiter" in recall["markdown"]
    assert f"Source: `{BASHREF.resolve()}`" in recall["markdown"]
    plain = cli("--store", bashref, "recall", "here documents delimiter", "--budget", "400")
    assert plain.stdout.strip() == recall["markdown"].strip()
    assert cli("--store", bashref, "recall", "x", "--budget", "10").exit_code == 4


def test_recall_merges_neighbouring_chunks_without_repeating_their_overlap():
    from ltm_cli.services.recall import merge_overlapping, recall
    from ltm_cli.services.search import Hit

    first = "Alpha beta gamma. The overlap sentence appears here."
    second = "The overlap sentence appears here. Delta epsilon."
    assert merge_overlapping(first, second) == "Alpha beta gamma. The overlap sentence appears here. Delta epsilon."
    assert merge_overlapping("abc", "xyz") == "abc\n\nxyz"

    def hit(rank: int, ordinal: int, text: str, doc: int = 1) -> Hit:
        return Hit(rank, "docs", ordinal, 1.0 / rank, text, text, document_id=doc, source=f"/d{doc}.md",
                   title=f"Doc {doc}", location={"heading": "Intro"}, ordinal=ordinal)

    out = recall("q", [hit(1, 4, second), hit(2, 3, first), hit(3, 9, "Elsewhere.", doc=2)], budget=500)
    assert [p.text for p in out.passages] == [
        "Alpha beta gamma. The overlap sentence appears here. Delta epsilon.", "Elsewhere."]
    assert out.passages[0].citation == "Doc 1 — Intro"
    tight = recall("q", [hit(1, 4, second), hit(2, 9, "Elsewhere. " * 200, doc=2)], budget=60)
    assert [p.text for p in tight.passages] == [second] and tight.tokens <= 60


@pytest.fixture
def widgets(cli, tmp_path):
    """Two folders of small documents with different tags and metadata, and one conversation."""
    for folder, count in (("a", 6), ("b", 6)):
        (tmp_path / folder).mkdir()
        for i in range(count):
            (tmp_path / folder / f"w{i}.md").write_text(f"# Widget {folder}{i}\n\nThe widget number {i} of "
                                                        f"{folder} spins at {i * 100} rpm.\n")
    assert cli("ingest", str(tmp_path / "a"), "--tag", "alpha", "--meta", "team=red").exit_code == 0
    assert cli("ingest", str(tmp_path / "b"), "--tag", "beta").exit_code == 0
    cli("history", "add", "-c", "shop", "--role", "assistant", "--outcome", "failure", "The widget order failed")
    return tmp_path


@pytest.mark.parametrize("mode", ["hybrid", "vector", "keyword"])
def test_filters_narrow_the_search_and_still_fill_the_limit(cli, widgets, mode):
    def sources(*args: str) -> list[str]:
        result = cli("search", "widget spins", "--mode", mode, "--json", *args)
        assert result.exit_code == 0, result.stderr
        return [h["source"] for h in result.json()]

    tagged = sources("--tag", "alpha", "-n", "5")
    assert len(tagged) == 5 and all("/a/" in s for s in tagged)
    assert len(sources("--tag", "alpha", "-n", "10")) == 6  # only six exist
    assert all("/b/" in s for s in sources("--source", "*/b/*")) and len(sources("--source", "*/b/*")) == 6
    assert len(sources("--source", "w3.md")) == 2
    assert all("/a/" in s for s in sources("--meta", "team=red"))
    assert sources("--since", "2999-01-01") == []
    assert len(sources("--until", "2999-01-01", "-n", "20")) == 12


def test_conversation_filter_keeps_history_search_to_that_conversation(cli, widgets):
    cli("history", "add", "-c", "garage", "The widget in the garage is broken")
    hits = cli("search", "widget", "--kind", "history", "--conversation", "garage", "--json").json()
    assert [h["text"] for h in hits] == ["The widget in the garage is broken"]
    missing = cli("search", "widget", "--kind", "history", "--conversation", "nowhere")
    assert missing.exit_code == 3 and "no conversation 'nowhere'" in missing.stderr


def test_kind_all_mixes_documents_and_history_and_history_filters_apply(cli, widgets):
    kinds = {h["kind"] for h in cli("search", "widget", "--kind", "all", "-n", "20", "--json").json()}
    assert kinds == {"docs", "history"}
    failed = cli("search", "widget", "--kind", "all", "--outcome", "failure", "--json").json()
    assert [(h["kind"], h["text"]) for h in failed] == [("history", "The widget order failed")]


@pytest.mark.parametrize(("args", "message"), [
    (["search", "widget", "--role", "user"], "--kind history"),
    (["search", "widget", "--kind", "history", "--tag", "x"], "--kind docs"),
    (["search", "widget", "--kind", "everything"], "unknown kind"),
    (["search", "widget", "--mode", "psychic"], "unknown mode"),
    (["search", "   "], "empty query"),
    (["search", "widget", "--since", "last tuesday"], "invalid time"),
])
def test_bad_search_input_exits_4_with_a_one_line_error(cli, args, message):
    result = cli(*args)
    assert result.exit_code == 4
    assert message in result.stderr and len(result.stderr.strip().splitlines()) <= 2


def test_heading_matches_outrank_body_matches_and_bm25_matches_a_reference(cli, tmp_path, store):
    """The SQL BM25 (tf decoded from ts_rank) equals BM25 computed here from the stored tsvectors."""
    from sqlalchemy import text

    from ltm_cli.config import load_config
    from ltm_cli.services import keyword as kw
    from ltm_cli.services import search as svc
    from ltm_cli.services.filters import CORPORA, Filters
    from ltm_cli.storage.engine import Database, fetch, named
    from ltm_cli.storage.stores import store_id

    docs = {"heading.md": "# Zebra care\n\nHow to feed the animals at the zoo.\n",
            "body.md": "# Animal care\n\nHow to feed the zebra at the zoo.\n",
            "many.md": "# Notes\n\nzebra zebra zebra stripes, a zebra again and the zebra crossing.\n",
            "none.md": "# Other\n\nNothing to see here at all.\n"}
    for name, body in docs.items():
        (tmp_path / name).write_text(body)
    assert cli("ingest", str(tmp_path)).exit_code == 0
    order = [h["source"].rsplit("/", 1)[-1] for h in
             cli("search", "zebra feed", "--mode", "keyword", "--json").json()]
    assert order[0] == "heading.md" and "none.md" not in order

    db = Database(load_config())
    try:
        with db.connect() as conn:
            sid = store_id(conn, store, create=False)
            corpus = CORPORA["docs"]
            scopes = svc.filter_scopes(conn, ("docs",), Filters(), sid)
            got = {key[1]: score for key, score in
                   svc.leg_rankings(conn, scopes, sid, None, 0, None, "zebra feed", 10)["keyword"]}
            n, avg, terms = kw.read_terms(fetch(conn, named(f"SELECT {kw.terms_sql(corpus)}"),
                                                {"store": sid, "query": "zebra feed"})[0][0])
            rows = conn.execute(text(
                "SELECT c.id, c.token_count, u.lexeme, cardinality(u.positions) AS tf, "
                "coalesce(cardinality(array_positions(u.weights, 'A')), 0) AS tf_a "
                "FROM chunks c, unnest(c.tsv) u WHERE c.store_id = :s AND u.lexeme = ANY(:l)"),
                {"s": sid, "l": [t for t, _ in terms]}).all()
    finally:
        db.dispose()
    df = dict(terms)
    assert df == {"zebra": 3, "feed": 2}
    expected: dict[int, float] = {}
    for row in rows:
        tf = row.tf + (kw.HEADING_BOOST - 1) * row.tf_a
        idf = math.log(1 + (n - df[row.lexeme] + 0.5) / (df[row.lexeme] + 0.5))
        norm = kw.BM25_K1 * (1 - kw.BM25_B + kw.BM25_B * row.token_count / avg)
        expected[row.id] = expected.get(row.id, 0.0) + idf * tf * (kw.BM25_K1 + 1) / (tf + norm)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-4)


def test_vector_and_keyword_legs_use_their_indexes_at_ten_thousand_chunks(store):
    """EXPLAIN shows the per-space HNSW index and the GIN index once a store is big enough to need them."""
    import hashlib

    import numpy as np
    from sqlalchemy import text

    from ltm_cli.chunking import Chunk
    from ltm_cli.config import load_config
    from ltm_cli.embedders.hashing import HashEmbedder
    from ltm_cli.services import search as svc
    from ltm_cli.services.filters import CORPORA, Filters
    from ltm_cli.services.ingest import write_chunks
    from ltm_cli.storage import vectors
    from ltm_cli.storage.engine import Database
    from ltm_cli.storage.stores import StoreRef, store_id

    n, dim = 12_000, 384
    rng = np.random.default_rng(7)
    words = [f"word{i}" for i in range(3000)]
    texts = [" ".join(rng.choice(words, 40)) + f" unique{i}" for i in range(n)]
    hashes = [hashlib.sha256(t.encode()).digest() for t in texts]
    embedder = HashEmbedder(dim)
    db = Database(load_config())
    try:
        with db.connect() as conn:
            sid = store_id(conn, store, create=True)
            space = vectors.ensure_space(conn, embedder.provider, embedder.model, dim)
            vectors.write(conn, space, hashes, embedder.embed(texts))
            doc = conn.execute(text("INSERT INTO documents (store_id, source, content_hash, media_type) "
                                    "VALUES (:s, 'bulk', '\\x00', 'text/plain') RETURNING id"), {"s": sid}).scalar()
            write_chunks(conn, doc, sid, [Chunk(i, t, None, {}, 42) for i, t in enumerate(texts)], hashes)
            vectors.ensure_index(conn, space, dim)
        db.analyze("chunks", "documents", "embeddings")
        with db.connect() as conn:
            corpus = CORPORA["docs"]
            where = corpus.where(Filters(), {}, conn, sid)
            conn.execute(text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
            qvec = vectors.vector_literal(embedder.embed([texts[5]])[0])
            plan = json.dumps(conn.execute(text("EXPLAIN (FORMAT JSON) " + svc.vector_sql(corpus, where, space, dim)),
                                           {"store": sid, "qvec": qvec, "k": 10}).scalar())
            assert vectors.index_name(space) in plan
            options = conn.execute(text("SELECT reloptions FROM pg_class WHERE relname = :n"),
                                   {"n": vectors.index_name(space)}).scalar()
            assert set(options) == {f"m={vectors.HNSW_M}", f"ef_construction={vectors.HNSW_EF_CONSTRUCTION}"}
            plan = json.dumps(conn.execute(text(
                "EXPLAIN (FORMAT JSON) SELECT id FROM chunks x WHERE x.store_id = :store "
                "AND x.tsv @@ 'unique5'::tsquery"), {"store": sid}).scalar())
            assert "ix_chunks_tsv" in plan
        hits = svc.search(db, embedder, StoreRef(store), texts[5], limit=10)
        assert len(hits) == 10 and hits[0].text == texts[5]
    finally:
        db.dispose()


def test_an_hnsw_build_gets_memory_for_its_graph_and_never_less_than_the_server_gives(store):
    """pgvector builds the graph in maintenance_work_mem and slows down several-fold once it no longer fits
    (bench/hnsw_build_memory.py); a fixed 256MB both starved big spaces and lowered a server configured higher."""
    import uuid

    import numpy as np
    from sqlalchemy import text

    from ltm_cli.config import load_config
    from ltm_cli.storage import vectors
    from ltm_cli.storage.engine import Database

    unlimited = 2**60
    per_row = vectors.build_memory(1_000_000, 384, limit=unlimited) / 1_000_000
    assert 1_480 <= per_row <= 1_800  # pgvector's notice: 5,654 tuples of 384 dimensions filled 8MB
    assert vectors.build_memory(1_000_000, 384, limit=2**30) == 2**30
    assert vectors.build_memory(10, 384, limit=unlimited) == vectors.MIN_BUILD_MEMORY
    assert vectors.build_memory(10, 384, current=3 * 2**30, limit=2**30) == 3 * 2**30
    assert vectors.build_memory(200_000, 1536, limit=unlimited) > vectors.build_memory(200_000, 384, limit=unlimited)
    assert vectors.memory_limit() >= 2**20
    db = Database(load_config())
    try:
        with db.connect():  # the schema, on a fresh server
            pass
        for server_setting, after in (("1MB", "64MB"), ("2GB", "2GB")):
            with db.engine.connect() as conn:  # rolled back: the space and its index leave nothing behind
                space = vectors.ensure_space(conn, "test", f"mwm-{uuid.uuid4().hex}", 8)
                rows = np.random.default_rng(1).normal(size=(300, 8)).astype(np.float32)
                vectors.write(conn, space, [uuid.uuid4().bytes for _ in range(300)], rows)
                conn.execute(text(f"SET LOCAL maintenance_work_mem = '{server_setting}'"))
                assert vectors.ensure_index(conn, space, 8)
                assert conn.execute(text("SHOW maintenance_work_mem")).scalar() == after
                conn.rollback()
    finally:
        db.dispose()


def test_diverse_keeps_near_duplicates_from_filling_the_top(cli, tmp_path):
    text = "Rotate the API keys every ninety days and revoke the old ones at once."
    for name in ("a.md", "b.md", "c.md"):  # the same paragraph under three names
        (tmp_path / name).write_text(f"# Key rotation\n\n{text}\n")
    (tmp_path / "other.md").write_text("# Key storage\n\nStore API keys in the vault, never in the repository.\n")
    for i, filler in enumerate(["The house keys are under the mat.", "Piano keys need tuning every year.",
                                "The garden gate squeaks when it rains."]):
        (tmp_path / f"filler{i}.md").write_text(f"# Note\n\n{filler}\n")
    assert cli("ingest", str(tmp_path)).exit_code == 0

    def top(*extra: str) -> list[str]:
        hits = cli("search", "rotate API keys", "-n", "2", "--json", *extra).json()
        return [h["source"].rsplit("/", 1)[-1] for h in hits]

    assert set(top()) <= {"a.md", "b.md", "c.md"}  # plain relevance: two copies of the same text
    assert top("--diverse")[1] == "other.md"  # MMR: the second result says something new


def test_a_document_chunk_gains_from_a_strong_chunk_beside_it(cli, tmp_path):
    """Chunks of one document lend their neighbours (ordinal ±1) a share of their score
    (fusion.DOC_NEIGHBOUR_WEIGHT): of two passages that match alike, the one after a strong match ranks first."""
    (tmp_path / "alone.md").write_text("# Grazing\n\nThe herds graze at dusk near water.\n")
    (tmp_path / "guide.md").write_text("# Quagga herds\n\nquagga quagga quagga herds.\n\n"
                                       "# Grazing\n\nThe herds graze at dawn near water.\n")
    assert cli("ingest", str(tmp_path / "alone.md")).exit_code == 0  # first: it wins ties on its lower id
    assert cli("ingest", str(tmp_path / "guide.md")).exit_code == 0
    hits = cli("search", "quagga herds graze", "--mode", "keyword", "--json").json()
    order = [(h["source"].rsplit("/", 1)[-1], h["ordinal"]) for h in hits]
    assert order[:3] == [("guide.md", 0), ("guide.md", 1), ("alone.md", 0)]


def test_named_parameters_leave_casts_and_quoted_text_alone():
    from ltm_cli.storage.engine import named

    sql = ("SELECT x::int, :a, ':skip', '{\"k\":true}'::jsonb, \"col:x\", 'it''s :no', CAST(:b AS tsquery) "
           "WHERE y LIKE '%'")
    assert named(sql) == ("SELECT x::int, %(a)s, ':skip', '{\"k\":true}'::jsonb, \"col:x\", 'it''s :no', "
                          "CAST(%(b)s AS tsquery) WHERE y LIKE '%%'")


def test_search_recovers_when_its_cached_space_id_names_another_space(store, tmp_path):
    """A database made anew behind the same URL can give a cached space id to a space of another size: the
    search looks the space up again instead of failing on the cast (found by review)."""
    from ltm_cli import Memory
    from ltm_cli.embedders.hashing import HashEmbedder
    from ltm_cli.services import search as svc

    (tmp_path / "a.md").write_text("# Zebra care\n\nFeed the zebra hay twice a day.\n")
    with Memory.open(store, embedder=HashEmbedder(dim=48)) as other:
        other.docs.ingest([str(tmp_path / "a.md")])
        with other.db.cursor() as cur:
            other_space = svc.vectors.find_space(cur, "hash", other.embedder.model, 48)
    with Memory.open(store) as memory:
        memory.docs.ingest([str(tmp_path / "a.md")])
        assert memory.search("zebra hay", mode="hybrid")  # caches the space id
        embedder = memory.embedder
        key = (memory.db.url, embedder.provider, embedder.model, embedder.dim)
        assert svc._SPACES[key] != other_space
        svc._SPACES[key] = other_space  # the id now names a 48-dimension space
        hits = memory.search("zebra hay", mode="hybrid")
        assert hits and "zebra" in hits[0].text.lower()
        assert svc._SPACES[key] != other_space


def test_a_store_that_does_not_exist_is_named_in_a_warning_not_passed_off_as_no_results(cli, tmp_path):
    (tmp_path / "a.md").write_text("# Redirects\n\nUse 2> to redirect standard error.\n")
    assert cli("ingest", str(tmp_path)).exit_code == 0
    for command in (("search", "redirect", "--json"), ("recall", "redirect", "--json")):
        found = cli(*command)
        assert found.exit_code == 0 and "does not exist" not in found.stderr
        typo = cli("--store", "no-such-store-xyz", *command)
        assert typo.exit_code == 0
        assert "warning: store 'no-such-store-xyz' does not exist" in typo.stderr
        assert typo.json() == [] or typo.json()["passages"] == []  # stdout stays the JSON result
        assert typo.json() == [] or typo.json()["warnings"]
