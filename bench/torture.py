"""Torture suite (issue #11): ingest killed mid-run, postmaster killed, concurrent writers, 100+ bad inputs.

    python bench/torture.py [--quick] [--seed N] [--section 1,2,3,4] [--keep]

Slow and not part of CI. Everything runs against a throwaway LTM_HOME in a temporary directory (the embedded
server is started by ltm itself and stopped with `ltm db stop` at the end), with LTM_EMBEDDER=hash, through the
real CLI as subprocesses; invariants are checked in SQL on the embedded server. Prints a summary line per
section and the full bad-input table, writes bench/results/torture.json, and exits 1 when a target is missed:
0 partial documents, 0 lost writes, 0 tracebacks, 0 hangs, every exit code as the README documents (where the
README allows two readings, e.g. a port already in use, either code is accepted).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.results_file import save  # noqa: E402 (needs the path above)

DATA = ROOT.parent / "shared" / "data"
CORPUS = [DATA / "markdown", DATA / "pdf" / "manuals" / "bashref.pdf",
          DATA / "pdf" / "manuals" / "bash-aosa-chapter.pdf"]  # ~370 documents, ~11,000 chunks: ~12 s
HANG_SECONDS = 60
TRACEBACK = "Traceback (most recent call last)"


# -- running ltm and reading its database ------------------------------------------------------------------
@dataclass
class Run:
    code: int | None  # None: it hung and was killed
    stdout: str
    stderr: str
    seconds: float

    @property
    def hung(self) -> bool:
        return self.code is None

    @property
    def traceback(self) -> bool:
        return TRACEBACK in self.stderr or TRACEBACK in self.stdout

    def json(self) -> Any:
        try:
            return json.loads(self.stdout)
        except ValueError:
            return None


class Ltm:
    """The real CLI as a subprocess, on one LTM_HOME, with no user configuration leaking in."""

    def __init__(self, home: Path, work: Path) -> None:
        self.home = home
        base = {k: v for k, v in os.environ.items() if not k.startswith("LTM_") and k != "OPENAI_API_KEY"}
        self.env = {**base, "LTM_HOME": str(home), "LTM_EMBEDDER": "hash", "NO_COLOR": "1", "COLUMNS": "200",
                    "XDG_CONFIG_HOME": str(work / "xdg-config")}

    def command(self, args: list[str | bytes]) -> list[str | bytes]:
        return [sys.executable, "-m", "ltm_cli", *args]

    def popen(self, args: list[str | bytes], env: dict[str, str] | None = None, stdin: Any = None) -> subprocess.Popen:
        return subprocess.Popen(self.command(args), cwd=ROOT, env={**self.env, **(env or {})},
                                stdin=subprocess.DEVNULL if stdin is None else stdin, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)

    def __call__(self, *args: str | bytes, env: dict[str, str] | None = None, stdin: Any = None,
                 input: bytes | None = None, timeout: float = HANG_SECONDS) -> Run:
        start = time.perf_counter()
        proc = self.popen(list(args), env, subprocess.PIPE if input is not None else stdin)
        try:
            out, err = proc.communicate(input=input, timeout=timeout)
            code: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            code = None
        return Run(code, out.decode(errors="replace"), err.decode(errors="replace"), time.perf_counter() - start)


class Sql:
    """Read-only look-ups on the embedded server; a fresh connection each time (the postmaster gets killed)."""

    def __init__(self, home: Path) -> None:
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        from ltm_cli.storage.server import EmbeddedServer

        self.engine = create_engine(EmbeddedServer(home).url(), poolclass=NullPool)
        self._notes: bool | None = None  # whether this schema has notes

    def rows(self, query: str, **params: Any) -> list[Any]:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            return conn.execute(text(query), params).all()

    def scalar(self, query: str, **params: Any) -> Any:
        rows = self.rows(query, **params)
        return rows[0][0] if rows else None

    def invariants(self, space: int | None = None) -> dict[str, int]:
        """Violations of what an interrupted or refused write must never leave behind (all zero when sound)."""
        vector = "e.space_id = :sp AND " if space is not None else ""
        checks = {
            "documents without chunks":
                "SELECT count(*) FROM documents d WHERE NOT EXISTS (SELECT 1 FROM chunks c WHERE c.document_id = d.id)",
            "documents with ordinal gaps":
                "SELECT count(*) FROM (SELECT document_id FROM chunks GROUP BY document_id HAVING min(ordinal) <> 0 "
                "OR max(ordinal) <> count(*) - 1 OR count(DISTINCT ordinal) <> count(*)) g",
            "chunks without a vector":
                f"SELECT count(*) FROM chunks c WHERE NOT EXISTS (SELECT 1 FROM embeddings e WHERE {vector}"
                "e.content_hash = c.embed_hash)",
            "conversations without messages":
                "SELECT count(*) FROM conversations v WHERE NOT EXISTS "
                "(SELECT 1 FROM messages m WHERE m.conversation_id = v.id)",
            "conversations with seq gaps":
                "SELECT count(*) FROM (SELECT conversation_id FROM messages GROUP BY conversation_id HAVING "
                "min(seq) <> 1 OR max(seq) <> count(*) OR count(DISTINCT seq) <> count(*)) g",
            "settings with version gaps":
                "SELECT count(*) FROM (SELECT store_id, key FROM settings GROUP BY store_id, key HAVING "
                "min(version) <> 1 OR max(version) <> count(*) OR count(DISTINCT version) <> count(*)) g",
        }
        return {name: self.scalar(q, sp=space) for name, q in checks.items()}

    def fingerprint(self) -> tuple:
        """Row counts and newest ids of everything a command can write: equal before and after a refusal."""
        if self._notes is None:
            self._notes = bool(self.scalar("SELECT to_regclass('notes') IS NOT NULL"))
        notes = ", (SELECT count(*) FROM notes), (SELECT max(id) FROM notes), " \
                "(SELECT count(*) FROM notes WHERE valid_until IS NULL)" if self._notes else ""
        return tuple(self.rows(
            "SELECT (SELECT count(*) FROM settings), (SELECT max(id) FROM settings), "
            "(SELECT count(*) FROM conversations), (SELECT count(*) FROM messages), (SELECT max(id) FROM messages), "
            "(SELECT count(*) FROM messages WHERE outcome IS NOT NULL), "
            "(SELECT count(*) FROM documents), (SELECT max(updated_at) FROM documents), "
            f"(SELECT count(*) FROM chunks), (SELECT max(id) FROM chunks){notes}")[0])

    def documents(self, store: str) -> dict[str, int]:
        return {r[0]: r[1] for r in self.rows(
            "SELECT d.source, (SELECT count(*) FROM chunks c WHERE c.document_id = d.id) FROM documents d "
            "JOIN stores s ON s.id = d.store_id WHERE s.name = :n", n=store)}

    def hash_space(self) -> int | None:
        return self.scalar("SELECT id FROM embedding_spaces WHERE provider = 'hash' ORDER BY id LIMIT 1")

    def has_index(self, space: int) -> bool:
        return bool(self.scalar("SELECT to_regclass(:n) IS NOT NULL", n=f"embeddings_hnsw_space_{space}"))


def broken(invariants: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in invariants.items() if v}


# -- 1. ingest killed at random moments --------------------------------------------------------------------
def kill_ingests(ltm: Ltm, sql: Sql, kills: int, rng: random.Random) -> dict[str, Any]:
    corpus = [str(p) for p in CORPUS]
    reference = ltm("ingest", *corpus, "--json", env={"LTM_STORE": "reference"}, timeout=600)
    if reference.code != 0:
        raise SystemExit(f"clean reference ingest failed ({reference.code}): {reference.stderr[-2000:]}")
    expected = sql.documents("reference")
    space = sql.hash_space()
    print(f"  reference: {len(expected)} documents, {sum(expected.values())} chunks in {reference.seconds:.1f}s")
    rounds = []
    for i in range(kills):
        force = i % 2 == 1  # odd rounds replace every document of one store (update path), even ones add
        store = "kill-force" if force else f"kill-{i}"
        delay = rng.uniform(0.5, max(1.0, reference.seconds * 0.9))
        proc = ltm.popen(["ingest", *corpus, *(["--force"] if force else [])], {"LTM_STORE": store})
        time.sleep(delay)
        killed = proc.poll() is None
        if killed:
            os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
        after_kill = broken(sql.invariants(space))
        at_kill = sql.documents(store)
        docs_at_kill = len(at_kill)
        short = sum(n != expected.get(source) for source, n in at_kill.items())  # a document cut short
        if short:
            after_kill["documents unlike a clean ingest"] = short
        index_at_kill = sql.has_index(space)
        rerun = ltm("ingest", *corpus, "--json", env={"LTM_STORE": store}, timeout=600)
        statuses: dict[str, int] = {}
        for f in (rerun.json() or {}).get("files", []):
            statuses[f["status"]] = statuses.get(f["status"], 0) + 1
        got = sql.documents(store)
        after_rerun = broken(sql.invariants(space))
        round_ = {"store": store, "force": force, "delay_s": round(delay, 2), "killed": killed,
                  "documents_at_kill": docs_at_kill, "index_at_kill": index_at_kill,
                  "broken_after_kill": after_kill, "rerun_exit": rerun.code, "rerun_s": round(rerun.seconds, 1),
                  "rerun_statuses": statuses, "index_after_rerun": sql.has_index(space),
                  "matches_reference": got == expected, "broken_after_rerun": after_rerun,
                  "traceback": rerun.traceback}
        if got != expected:
            missing = sorted(set(expected) - set(got))[:3]
            differ = sorted(s for s in set(expected) & set(got) if expected[s] != got[s])[:3]
            round_["difference"] = {"missing": missing, "extra": sorted(set(got) - set(expected))[:3],
                                    "chunk_counts_differ": differ}
        rounds.append(round_)
        print(f"  kill {i + 1}/{kills} {store:<10} after {delay:5.2f}s: "
              f"{'killed' if killed else 'had finished'}, {docs_at_kill} docs, index "
              f"{'present' if index_at_kill else 'missing'}, broken {after_kill or 'none'}; re-run exit {rerun.code} "
              f"{statuses} in {rerun.seconds:.1f}s, index {'ok' if round_['index_after_rerun'] else 'MISSING'}, "
              f"{'matches' if got == expected else 'DIFFERS FROM'} reference")
    ok = [r for r in rounds if not r["broken_after_kill"] and not r["broken_after_rerun"] and r["rerun_exit"] == 0
          and r["index_after_rerun"] and r["matches_reference"] and not r["traceback"]]
    return {"reference": {"documents": len(expected), "chunks": sum(expected.values()),
                          "seconds": round(reference.seconds, 1)},
            "kills": kills, "killed_mid_run": sum(r["killed"] for r in rounds),
            "index_missing_at_kill": sum(not r["index_at_kill"] for r in rounds),
            "partial_documents": sum(r["broken_after_kill"].get("documents without chunks", 0) for r in rounds),
            "rounds_ok": len(ok), "rounds": rounds, "passed": len(ok) == kills}


# -- 2. the embedded postmaster killed -----------------------------------------------------------------------
def kill_postmaster(ltm: Ltm, sql: Sql, kills: int) -> dict[str, Any]:
    pid_file = ltm.home / "pgdata" / "postmaster.pid"
    rounds = []
    for i in range(kills):
        ltm("settings", "get", "x", "--default", "0")  # make sure a server is up
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        value = f"after-kill-{i}"
        set_ = ltm("settings", "set", f"torture.postmaster.k{i}", value, "--string", env={"LTM_STORE": "postmaster"})
        get = ltm("settings", "get", f"torture.postmaster.k{i}", env={"LTM_STORE": "postmaster"})
        new_pid = int(pid_file.read_text().split()[0]) if pid_file.exists() else None
        ok = set_.code == 0 and get.code == 0 and get.stdout == value and new_pid != pid
        rounds.append({"killed_pid": pid, "new_pid": new_pid, "set_exit": set_.code, "set_s": round(set_.seconds, 2),
                       "get_exit": get.code, "value_ok": get.stdout == value, "ok": ok,
                       "stderr": (set_.stderr + get.stderr).strip()[-300:] if not ok else ""})
        print(f"  postmaster kill {i + 1}/{kills}: pid {pid} -> {new_pid}; set exit {set_.code} in "
              f"{set_.seconds:.1f}s, get exit {get.code}, value {'ok' if get.stdout == value else 'WRONG'}")
    bad = broken(sql.invariants())
    return {"kills": kills, "ok": sum(r["ok"] for r in rounds), "broken_after": bad,
            "max_recovery_s": max(r["set_s"] for r in rounds), "rounds": rounds,
            "passed": all(r["ok"] for r in rounds) and not bad}


# -- 3. concurrent writers -----------------------------------------------------------------------------------
def run_writers(ltm: Ltm, writers: int, ops: int, command: Callable[[int, int], list[str]]) -> tuple[list[Run], float]:
    barrier = threading.Barrier(writers)
    results: list[Run] = []
    lock = threading.Lock()

    def writer(w: int) -> None:
        barrier.wait()
        for j in range(ops):
            run = ltm(*command(w, j), env={"LTM_STORE": "concurrent"})
            with lock:
                results.append(run)

    start = time.perf_counter()
    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.perf_counter() - start


def contiguous(numbers: list[int]) -> bool:
    return sorted(numbers) == list(range(1, len(numbers) + 1))


def concurrent_writers(ltm: Ltm, sql: Sql, writers: int, ops: int, work: Path) -> dict[str, Any]:
    store_rows = "JOIN stores st ON st.id = s.store_id WHERE st.name = 'concurrent'"
    docs = work / "concurrent"
    docs.mkdir()
    for w in range(writers):
        for j in range(ops):
            (docs / f"w{w}-{j}.md").write_text(f"# Writer {w} file {j}\n\n" + f"unique{w}x{j} words about it. " * 80)

    def distinct_keys() -> tuple[int, int, bool]:
        found, dup, ok = 0, 0, True
        for w in range(writers):
            versions = [r[0] for r in sql.rows(f"SELECT version FROM settings s {store_rows} AND key = :k",
                                               k=f"conc.distinct.w{w}")]
            found += min(len(versions), ops)
            dup += max(0, len(versions) - ops)
            ok = ok and contiguous(versions)
        return found, dup, ok

    def same_key() -> tuple[int, int, bool]:
        rows = sql.rows(f"SELECT version, value FROM settings s {store_rows} AND key = 'conc.same'")
        values = [r[1] for r in rows]
        wanted = {f"w{w}-{j}" for w in range(writers) for j in range(ops)}
        return len(wanted & set(values)), len(values) - len(set(values)), contiguous([r[0] for r in rows])

    def history() -> tuple[int, int, bool]:
        rows = sql.rows("SELECT m.seq, m.content FROM messages m JOIN conversations s ON s.id = m.conversation_id "
                        f"{store_rows} AND s.external_id = 'conc-conv'")
        contents = [r[1] for r in rows]
        wanted = {f"writer {w} turn {j}" for w in range(writers) for j in range(ops)}
        return len(wanted & set(contents)), len(contents) - len(set(contents)), contiguous([r[0] for r in rows])

    def ingest() -> tuple[int, int, bool]:
        got = sql.documents("concurrent")
        wanted = {str((docs / f"w{w}-{j}.md").resolve()) for w in range(writers) for j in range(ops)}
        return len(wanted & set(got)), len(set(got) - wanted), all(n > 0 for n in got.values())

    kinds: list[tuple[str, Callable[[int, int], list[str]], Callable[[], tuple[int, int, bool]]]] = [
        ("settings set, distinct keys", lambda w, j: ["settings", "set", f"conc.distinct.w{w}", str(j)], distinct_keys),
        ("settings set, one key", lambda w, j: ["settings", "set", "conc.same", f"w{w}-{j}", "--string"], same_key),
        ("history add, one conversation",
         lambda w, j: ["history", "add", f"writer {w} turn {j}", "-c", "conc-conv"], history),
        ("ingest, distinct files", lambda w, j: ["ingest", str(docs / f"w{w}-{j}.md")], ingest),
    ]
    rows = []
    for name, command, verify in kinds:
        runs, seconds = run_writers(ltm, writers, ops, command)
        found, duplicates, ordered = verify()
        failed = [r for r in runs if r.code != 0]
        rows.append({"kind": name, "writers": writers, "writes": writers * ops, "failed_commands": len(failed),
                     "lost": writers * ops - found, "duplicates": duplicates, "contiguous": ordered,
                     "tracebacks": sum(r.traceback for r in runs), "hangs": sum(r.hung for r in runs),
                     "seconds": round(seconds, 1),
                     "errors": sorted({r.stderr.strip()[-200:] for r in failed})[:3]})
        print(f"  {name:<30} {writers} writers x {ops}: {found}/{writers * ops} kept, {len(failed)} failed, "
              f"{duplicates} duplicates, {'contiguous' if ordered else 'GAPS'} in {seconds:.1f}s")
    bad = broken(sql.invariants())
    passed = not bad and all(r["lost"] == 0 and r["failed_commands"] == 0 and r["duplicates"] == 0
                             and r["contiguous"] and not r["tracebacks"] and not r["hangs"] for r in rows)
    return {"kinds": rows, "lost": sum(r["lost"] for r in rows), "broken_after": bad, "passed": passed}


# -- 4. bad inputs -------------------------------------------------------------------------------------------
@dataclass
class Case:
    expect: tuple[int, ...]
    args: list[str | bytes]
    env: dict[str, str] = field(default_factory=dict)
    stdin: str | bytes | None = None  # a path to read from ("/dev/zero") or the bytes themselves
    absent: str | None = None  # a file name no document may come from afterwards
    writes: bool = False  # writing some rows is right even when the command fails (ingest, history import)

    def display(self, tmp: Path) -> str:
        """The command as a shell line, with $T for the temporary directory and long arguments shortened."""

        def short(text: str) -> str:
            text = text.replace(str(tmp), "$T")
            return shlex.quote(text if len(text) <= 60 else f"{text[:12]}…({len(text)} chars)").replace("'$T", "$T'")

        env = " ".join(f"{k}={short(v)}" for k, v in self.env.items())
        parts = [short(os.fsdecode(a) if isinstance(a, bytes) else a) for a in self.args]
        stdin = ""
        if isinstance(self.stdin, str):
            stdin = f" < {self.stdin}"
        elif isinstance(self.stdin, bytes):
            stdin = f" <<< {self.stdin[:20]!r}"
        line = f"{env + ' ' if env else ''}ltm {' '.join(parts)}{stdin}"
        return line.encode("utf-8", "backslashreplace").decode("utf-8")


def make_inputs(work: Path) -> dict[str, Path]:
    """Hostile files, made at run time in a temporary directory."""
    d = work / "bad"
    d.mkdir()
    p: dict[str, Path] = {}

    def put(name: str, data: str | bytes) -> Path:
        path = d / name
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        p[name] = path
        return path

    rnd = random.Random(7)
    put("good.md", "# Good\n\nA good file about compilers and the pelicans that maintain them.\n")
    put("good2.md", "# Second\n\nAnother good file, about sourdough starters and their feeding schedule.\n")
    put("empty.txt", "")
    put("blank.md", "  \n\t\n\n")
    put("binary.txt", bytes(rnd.randrange(256) for _ in range(4096)))
    put("random.pdf", bytes(rnd.randrange(256) for _ in range(4096)))
    put("corrupt.pdf", b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 2 0 R >>\nendobj\n" + b"\x00garbage" * 500)
    aosa = (DATA / "pdf" / "manuals" / "bash-aosa-chapter.pdf").read_bytes()
    put("truncated.pdf", aosa[: len(aosa) * 2 // 5])
    put("text-as.pdf", "this is not a PDF at all, only text with a .pdf name\n")
    put("huge.txt", "word " * 600_000)  # 3 MB
    put("utf16-bom.txt", "UTF-16 text about tomatoes and their cultivation.\n".encode("utf-16"))
    put("utf16-nobom.txt", "UTF-16 text without a byte order mark, about turnips.\n".encode("utf-16-le"))
    put("latin1.md", "# Caf\xe9\n\nna\xefve r\xe9sum\xe9 in Latin-1, not UTF-8.\n".encode("latin-1"))
    put("nul.txt", b"text with a NUL \x00 in the middle")
    put("laughs.yaml", "openapi: 3.0.0\na: &a [" + ",".join(['"lol"'] * 9) + "]\n" + "".join(
        f"{b}: &{b} [{','.join(['*' + a] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)))
    put("deep.json", '{"openapi": "3.0.0", "info": {"title": "x", "version": "1"}, "x": ' + "[" * 50_000
        + "]" * 50_000 + "}")
    put("deep.yaml", "openapi: 3.0.0\ninfo: {title: x, version: '1'}\nx: " + "[" * 20_000 + "]" * 20_000 + "\n")
    put("circular.yaml", "openapi: 3.0.0\ninfo: {title: Loop, version: '1'}\npaths:\n  /a:\n    get:\n"
        "      responses:\n        '200':\n          description: ok\n          content:\n"
        "            application/json:\n"
        "              schema: {$ref: '#/components/schemas/A'}\ncomponents:\n  schemas:\n"
        "    A: {type: object, properties: {b: {$ref: '#/components/schemas/B'}}}\n"
        "    B: {type: object, properties: {a: {$ref: '#/components/schemas/A'}}}\n")
    put("badref.yaml", "openapi: 3.0.0\ninfo: {title: Refs, version: '1'}\npaths:\n  /a:\n    get:\n"
        "      summary: Get a\n      parameters: [{$ref: 'nowhere.yaml#/p'}, {$ref: '/etc/nothing/here.yaml#/x'}]\n"
        "      responses: {'200': {description: ok}}\n")
    put("paths-garbage.yaml", "openapi: 3.0.0\ninfo: {title: Bad, version: '1'}\npaths: 5\n")
    put("broken-syntax.yaml", "openapi: 3.0.0\npaths:\n  /a: {get: [unclosed\n\t- : :\n")
    put("one-line.md", "x" * 2_000_000)
    put("headings.md", "#\n" * 50_000)
    put("elf.bin", b"\x7fELF\x02\x01\x01" + bytes(4000))
    # settings files
    put("not-object.json", "[1, 2, 3]")
    put("invalid.json", '{"a": ')
    put("invalid.toml", "a = \n[[[")
    put("partial.json", json.dumps({"imp.a": 1, "imp.b": 2, "bad key": 3}))
    put("partial-nul.json", json.dumps({"imp.c": 1, "imp.d": "x\u0000y"}))
    put("conflict.json", json.dumps({"imp.g": 1, "imp.g.x": 2}))
    put("conflict-existing.json", json.dumps({"imp.e": 1, "shape.grp": 2}))
    put("deep-settings.json", "[" * 100_000 + "]" * 100_000)
    put("utf16.json", json.dumps({"imp.u": 1}).encode("utf-16"))
    put("long-key.json", json.dumps({"imp.f": 1, "k" * 5000: 2}))
    put("inf.json", '{"imp.h": 1, "imp.i": 1e999}')
    put("nul-value.txt", "value with a NUL \x00 inside")
    put("value-5mb.txt", "v" * 5_000_000)
    # history files
    put("bad-lines.jsonl", json.dumps({"id": "imported-ok", "messages": [{"role": "user", "content": "hello"}]})
        + "\n{\n" + json.dumps({"messages": [{"role": "wizard", "content": "abracadabra"}]}) + "\n")
    put("messages-not-list.json", json.dumps({"messages": 5}))
    put("transcript-garbage.txt", "no roles here\njust lines\nof nonsense\n")
    put("deep-history.json", '{"messages": ' + "[" * 100_000 + "]" * 100_000 + "}")
    # config files
    put("config-unknown.toml", 'store = "x"\nfrobnicate = true\n')
    put("config-invalid.toml", "store = \n")
    put("config-type.toml", 'chunk_tokens = "lots"\n')
    put("config-binary.toml", b"\xff\xfe\x00\x01binary")
    (work / "xdg-bad" / "ltm").mkdir(parents=True)
    (work / "xdg-bad" / "ltm" / "config.toml").write_text("[unknown]\nkey = 1\n")
    p["xdg-bad"] = work / "xdg-bad"
    # special files
    os.mkfifo(d / "fifo")
    p["fifo"] = d / "fifo"
    (d / "loop.txt").symlink_to(d / "loop.txt")
    p["loop.txt"] = d / "loop.txt"
    (d / "dangling.txt").symlink_to(d / "nowhere.txt")
    p["dangling.txt"] = d / "dangling.txt"
    mixed = d / "mixed"
    mixed.mkdir()
    (mixed / "fine.md").write_text("# Fine\n\nThe fine file of the mixed folder, about lighthouses.\n")
    os.mkfifo(mixed / "pipe.txt")
    (mixed / "loop.txt").symlink_to(mixed / "loop.txt")
    (mixed / "dangling.txt").symlink_to(mixed / "nowhere.txt")
    p["mixed"] = mixed
    (d / "emptydir").mkdir()
    p["emptydir"] = d / "emptydir"
    odd = d / "odd-names"
    odd.mkdir()
    with open(os.fsencode(odd) + b"/\xff\xfe latin \xe9.txt", "wb") as handle:
        handle.write(b"A file whose name is not UTF-8, about walruses.\n")
    p["odd-names"] = odd
    allowed = work / "allowed"
    allowed.mkdir()
    (allowed / "inside.md").write_text("# Inside\n\nAllowed.\n")
    p["allowed"] = allowed
    pgdata_file = work / "home-pgdata-file"
    pgdata_file.mkdir()
    (pgdata_file / "pgdata").write_text("not a directory")
    p["home-pgdata-file"] = pgdata_file
    pgdata_junk = work / "home-pgdata-junk"
    (pgdata_junk / "pgdata").mkdir(parents=True)
    (pgdata_junk / "pgdata" / "junk").write_text("junk")
    (pgdata_junk / "pgdata" / "postmaster.pid").write_text("garbage\n")
    p["home-pgdata-junk"] = pgdata_junk
    try:
        from pypdf import PdfReader, PdfWriter

        writer = PdfWriter()
        writer.add_page(PdfReader(DATA / "pdf" / "manuals" / "bash-aosa-chapter.pdf").pages[0])
        writer.encrypt("right-password")
        with open(d / "encrypted.pdf", "wb") as handle:
            writer.write(handle)
        p["encrypted.pdf"] = d / "encrypted.pdf"
    except Exception as exc:  # noqa: BLE001 - the encrypted cases are skipped, and the report says so
        print(f"  (no encrypted PDF: {exc})")
    put("passwords-bad.txt", "this line has no separator\n")
    return p


def bad_inputs(p: dict[str, Path], setup: dict[str, Any], busy_port: int, sock_dir: str) -> list[Case]:
    """At least 100 hostile invocations across every command, each with the exit code the README promises."""
    s = {k: str(v) for k, v in p.items()}
    msg = str(setup["message_id"])
    big = "99999999999999999999"
    zero1m = {"LTM_MAX_INPUT_SIZE": "1MB"}
    deep_args = "[" * 60_000 + "]" * 60_000
    offline = {"LTM_EMBEDDER": "openai", "LTM_EMBEDDING_BASE_URL": "http://127.0.0.1:1/v1",
               "LTM_EMBEDDING_API_KEY": "sk-test", "LTM_EMBEDDING_TIMEOUT": "5"}
    token = {"LTM_MCP_TOKEN": "a-long-enough-token-0123456789"}

    def c(expect: int | tuple[int, ...], *args: str | bytes, **kw: Any) -> Case:
        return Case(expect if isinstance(expect, tuple) else (expect,), list(args), **kw)

    cases = [
        # usage
        c(2, "no-such-command"), c(2, "settings", "get", "k", "--bogus"), c(2, "search"), c(2, "--store"),
        c(2, "history", "outcome", msg), c(2, "history", "outcome", "abc", "success"),
        c(2, "search", "x", "-n", "abc"), c(2, "settings", "revert", "solo.key", "--to", "one"),
        # settings set / get / list / unset / history / revert / export / import
        c(4, "settings", "set", "a..b", "1"), c(4, "settings", "set", ".a", "1"), c(4, "settings", "set", "a.", "1"),
        c(4, "settings", "set", "a b", "1"), c(4, "settings", "set", "", "1"), c(4, "settings", "set", "a/b", "1"),
        c(4, "settings", "set", "k" * 5000, "1"), c(4, "settings", "set", "ключ", "1"),
        c(4, "settings", "set", "k"), c(4, "settings", "set", "k", "v", "--file", s["good.md"]),
        c(4, "settings", "set", "k", "--file", s["good.md"] + ".missing"),
        c(4, "settings", "set", "k", "--file", s["fifo"]),
        c(4, "settings", "set", "k", "--file", s["emptydir"]), c(4, "settings", "set", "k", "--file", s["binary.txt"]),
        c(4, "settings", "set", "k", "--file", s["nul-value.txt"]),
        c(4, "settings", "set", "k", "-", stdin="/dev/zero", env=zero1m),
        c(4, "settings", "set", "k", "-", stdin=b"\xff\xfe not utf-8"), c(4, "settings", "set", "k", "1e999"),
        c(4, "settings", "set", "k", b"\xff\xfe"), c(4, "settings", "set", "k", b"a\xed\xa0\x80b"),
        c(7, "settings", "set", "shape.grp", "5"), c(7, "settings", "set", "shape.grp.x.y", "1"),
        c(0, "settings", "set", "deep.value", "--file", s["deep-settings.json"]),
        c(0, "settings", "set", "huge.value", "--file", s["value-5mb.txt"]),
        c(3, "settings", "get", "no.such.key"), c(4, "settings", "get", "a..b"),
        c(4, "settings", "get", "solo.key", "--at", "yesterday-ish"),
        c(4, "settings", "get", "solo.key", "--at", "2026-02-30"),
        c(3, "settings", "get", "solo.key", "--at", "1990-01-01"),
        c(4, "settings", "get", "solo.key", "--at", "99999-01-01"),
        c(4, "settings", "list", "--format", "xml"), c(4, "settings", "list", "a..b"),
        c(3, "settings", "unset", "no.such.key"), c(7, "settings", "unset", "shape"),
        c(3, "settings", "history", "no.such.key"), c(4, "settings", "history", "a..b"),
        c(3, "settings", "revert", "no.such.key"), c(3, "settings", "revert", "solo.key"),
        c(3, "settings", "revert", "solo.key", "--to", "99"), c((3, 4), "settings", "revert", "solo.key", "--to", "0"),
        c((3, 4), "settings", "revert", "solo.key", "--to", big),
        c(4, "settings", "revert", "solo.key", "--at", "never"),
        c(4, "settings", "revert", "solo.key", "--to", "1", "--at", "2020-01-01"),
        c(4, "settings", "export", "--format", "yaml"), c((1, 4), "settings", "export", "/nonexistent/dir/out.json"),
        c(4, "settings", "import", s["not-object.json"]), c(4, "settings", "import", s["invalid.json"]),
        c(4, "settings", "import", s["invalid.toml"]), c(4, "settings", "import", s["partial.json"]),
        c(4, "settings", "import", s["partial-nul.json"]), c(7, "settings", "import", s["conflict.json"]),
        c(7, "settings", "import", s["conflict-existing.json"]), c(4, "settings", "import", s["deep-settings.json"]),
        c(4, "settings", "import", s["utf16.json"]), c(4, "settings", "import", s["binary.txt"]),
        c(4, "settings", "import", s["long-key.json"]), c(4, "settings", "import", s["inf.json"]),
        c(4, "settings", "import", s["fifo"]), c(4, "settings", "import", s["emptydir"]),
        c(4, "settings", "import", s["good.md"] + ".missing"),
        c(4, "settings", "import", "-", stdin="/dev/zero", env=zero1m),
        c(4, "settings", "import", s["partial.json"], "--format", "yaml"),
        c(4, "settings", "import", s["partial.json"], "--dry-run"), c(4, "settings", "import", s["empty.txt"]),
        # ingest
        c(0, "ingest", s["empty.txt"]), c(0, "ingest", s["blank.md"]), c(0, "ingest", s["binary.txt"]),
        c(0, "ingest", s["elf.bin"]), c(0, "ingest", s["nul.txt"]),
        c(1, "ingest", s["random.pdf"], absent="random.pdf"), c(1, "ingest", s["corrupt.pdf"], absent="corrupt.pdf"),
        c((0, 1), "ingest", s["truncated.pdf"]), c((0, 1), "ingest", s["text-as.pdf"]),
        c(1, "ingest", s["huge.txt"], "--max-file-size", "1MB", absent="huge.txt"),
        c(1, "ingest", s["huge.txt"], env=zero1m, absent="huge.txt"),
        c(4, "ingest", s["good.md"], "--max-file-size", "lots"),
        c((1, 4), "ingest", s["good.md"], "--max-file-size", "0"),
        c((2, 4), "ingest", s["good.md"], "--max-file-size", "-5"),
        c(4, "ingest", s["fifo"]), c(4, "ingest", "/dev/null"), c(4, "ingest", "/dev/zero"),
        c(0, "ingest", "/proc/self/status"),
        c((1, 4), "ingest", s["loop.txt"]),
        c((1, 4), "ingest", s["dangling.txt"]),
        c(1, "ingest", s["mixed"], writes=True),
        c(0, "ingest", s["utf16-bom.txt"]),
        c((0, 1), "ingest", s["utf16-nobom.txt"]),
        c((0, 1), "ingest", s["latin1.md"]),
        c(1, "ingest", s["laughs.yaml"], absent="laughs.yaml"), c(1, "ingest", s["deep.json"], absent="deep.json"),
        c(1, "ingest", s["deep.yaml"], absent="deep.yaml"), c((0, 1), "ingest", s["circular.yaml"]),
        c(0, "ingest", s["badref.yaml"]), c((0, 1), "ingest", s["paths-garbage.yaml"]),
        c((0, 1), "ingest", s["broken-syntax.yaml"]),
        c(0, "ingest", s["one-line.md"]),
        c(0, "ingest", s["headings.md"]),
        c(4, "ingest", s["emptydir"]), c((1, 4), "ingest", s["good.md"] + ".missing"),
        c((1, 4), "ingest", s["emptydir"] + "/nomatch*.md"), c((0, 1), "ingest", s["odd-names"]),
        c(4, "ingest", "-", stdin="/dev/zero", env=zero1m), c(0, "ingest", "-", "--name", "empty-stdin", stdin=b""),
        c(0, "ingest", "-", "--name", "binary-stdin", stdin=bytes(range(256)) * 8),
        c(4, "ingest", s["good.md"], "--meta", "novalue"), c(4, "ingest", s["good.md"], "--meta", "=x"),
        c(4, "ingest", s["good.md"], "--store", "bad name"), c(4, "ingest", s["good.md"], "--password-file",
                                                                  s["passwords-bad.txt"]),
        c(4, "ingest", s["good.md"], "--password-file", s["good.md"] + ".missing"),
        c(4, "ingest", s["good2.md"], env={"LTM_CHUNK_TOKENS": "0"}),
        c(4, "ingest", s["good2.md"], env={"LTM_CHUNK_TOKENS": "-5"}),
        c(4, "ingest", s["good2.md"], env={"LTM_CHUNK_TOKENS": "abc"}),
        c(4, "ingest", s["good2.md"], env={"LTM_CHUNK_OVERLAP": "500"}),
        c(4, "ingest", s["good2.md"], env={"LTM_CHUNK_OVERLAP": "-1"}),
        c(6, "ingest", s["good2.md"], env=offline, absent="good2.md"),
        # search / recall
        c((0, 4), "search", ""),
        c((0, 4), "search", "   "),
        c(4, "search", "x", "-n", "0"),
        c(4, "search", "x", "-n", "1001"),
        c(4, "search", "x", "-n", big),
        c(4, "search", "x", "--mode", "fuzzy"),
        c(4, "search", "x", "--kind", "everything"),
        c(4, "search", "x", "--since", "garbage"), c(4, "search", "x", "--until", "2026-02-30"),
        c(4, "search", "x", "--meta", "novalue"), c(4, "search", "x", "--role", "wizard"),
        c(4, "search", "x", "--outcome", "meh"), c(4, "search", "x", "--kind", "history", "-C", "-1"),
        c((0, 4), "search", "x", "-C", big), c(0, "search", "x", "--source", "[[["),
        c(0, "search", "!!! & | :* ( <-> ) '\\"), c(0, "search", "'; DROP TABLE documents; --"),
        c(0, "search", "word " * 20_000), c((0, 4), "search", b"\xff\xfe caf\xe9"),
        c((0, 4), "search", "x", "--since", "0001-01-01"),
        c((3, 4), "settings", "get", "solo.key", "--at", "0001-01-01"),
        c((0, 3), "search", "x", "--kind", "history", "-c", "no-such-conv"),
        c(4, "recall", "x", "--budget", "10"),
        c(4, "recall", "x", "--budget", "-5"),
        c((0, 4), "recall", "x", "--budget", big),
        c(4, "recall", "x", "--kind", "x"), c(4, "recall", "x", "--mode", "x"), c(4, "recall", "x", "-C", "-1"),
        c(6, "search", "hello", env=offline),
        # history
        c(4, "history", "add", "hi", "-c", "new-conv-1", "--role", "wizard"),
        c(4, "history", "add", "hi", "-c", "new-conv-2", "--args", "{bad"),
        c(4, "history", "add", "hi", "-c", "new-conv-3", "--outcome", "maybe"),
        c(4, "history", "add", "hi", "-c", "new-conv-4", "--at", "nonsense"),
        c((0, 4), "history", "add", "hi", "-c", "new-conv-14", "--at", "0001-01-01"),
        c(4, "history", "add", "hi", "-c", "new-conv-5", "--meta", "novalue"),
        c(4, "history", "add", "hi", "--new", "-c", "new-conv-6"), c(4, "history", "add", "hi"),
        c(4, "history", "add", "-c", "new-conv-7"),
        c(4, "history", "add", "-", "-c", "new-conv-8", stdin="/dev/zero", env=zero1m),
        c(4, "history", "add", "-", "-c", "new-conv-9", stdin=b"\xff\xfe not utf-8"),
        c((0, 4), "history", "add", b"caf\xe9 \xff", "-c", "new-conv-10"),
        c((0, 4), "history", "add", "hi", "-c", "c" * 5000),
        c(4, "history", "add", "hi", "-c", "new-conv-11", "--tool", "t", "--args", deep_args),
        c(6, "history", "add", "hi", "-c", "new-conv-12", env=offline),
        c(4, "history", "outcome", msg, "bogus"), c(3, "history", "outcome", "999999999", "success"),
        c((3, 4), "history", "outcome", big, "success"), c(3, "history", "outcome", "0", "success"),
        c(3, "history", "show", "no-such-conv"),
        c((3, 4), "history", "show", ""),
        c((3, 4), "history", "show", "x" * 5000),
        c(3, "history", "rm", "no-such-conv", "--yes"), c(4, "history", "rm", "setup-conv"),
        c(4, "history", "prune", "--before", "garbage", "--yes"), c(4, "history", "prune", "--before", "2999-01-01"),
        c(3, "history", "export", "-c", "no-such-conv"),
        c((1, 4), "history", "export", "-o", "/nonexistent/dir/out.jsonl"),
        c(4, "history", "list", "-n", "-1"), c(4, "history", "list", "--since", "garbage"),
        c(4, "history", "list", "--role", "wizard"), c(4, "history", "list", "--outcome", "meh"),
        c((0, 3), "history", "list", "-c", "no-such-conv"), c((0, 4), "history", "list", "-n", big),
        c(4, "history", "conversations", "-n", "-2"), c(4, "history", "conversations", "--since", "garbage"),
        c((0, 4), "history", "conversations", "-n", big),
        c(4, "history", "search", "x", "-n", "1001"), c(4, "history", "search", "x", "-C", "-5"),
        c(4, "history", "search", "x", "--outcome", "bad"), c(4, "history", "search", "x", "--role", "bad"),
        c(4, "history", "search", "x", "--since", "bad"), c((0, 3), "history", "search", "x", "-c", "no-such-conv"),
        c(4, "history", "import", s["fifo"]), c(4, "history", "import", "-", stdin="/dev/zero", env=zero1m),
        c(4, "history", "import", s["good.md"] + ".missing"), c(4, "history", "import", s["emptydir"]),
        c(4, "history", "import", s["binary.txt"]), c(4, "history", "import", s["utf16.json"]),
        c(1, "history", "import", s["bad-lines.jsonl"], writes=True), c((0, 4), "history", "import", s["empty.txt"]),
        c((1, 4), "history", "import", s["deep-history.json"]),
        c((1, 4), "history", "import", s["messages-not-list.json"]),
        c((1, 4), "history", "import", s["transcript-garbage.txt"]),
        # notes
        c((0, 4), "note", "add", ""), c(4, "note", "add", "a fact", "--about", "a..b"),
        c(4, "note", "add", "a fact", "--meta", "novalue"), c(2, "note", "add", "a fact", "--source", "abc"),
        c((3, 4), "note", "add", "a fact", "--source", "999999999"),
        c((3, 4), "note", "add", "a fact", "--source", big), c((3, 4), "note", "add", "a fact", "--doc", "999999999"),
        c(3, "note", "supersede", "999999999", "new text"), c(3, "note", "forget", "999999999", "--reason", "r"),
        c(2, "note", "forget", "1"), c(3, "note", "show", "999999999"), c((3, 4), "note", "show", big),
        c(4, "note", "list", "--at", "garbage"), c(4, "note", "list", "-n", "-1"),
        c(4, "tools", "call", "remember", "--args", '{"text": ""}'),
        c(3, "tools", "call", "forget_note", "--args", '{"note_id": 999999999, "reason": "x"}'),
        c(4, "tools", "call", "supersede_note", "--args", '{"note_id": 0, "text": "x"}'),
        c((4, 6), "history", "distill"),
        c(6, "history", "distill", env={"LTM_CHAT_BASE_URL": "http://127.0.0.1:1/v1", "LTM_CHAT_MODEL": "m",
                                        "LTM_CHAT_API_KEY": "sk-test", "LTM_EMBEDDING_TIMEOUT": "5"}),
        c(4, "history", "distill", "--since", "garbage"),
        # docs
        c(3, "docs", "show", "no-such-doc"), c(3, "docs", "show", big), c(3, "docs", "show", "999999"),
        c(3, "docs", "rm", "no-such-doc", "--yes"), c(4, "docs", "rm", s["good.md"]), c(4, "docs", "list", "-n", "-3"),
        c(0, "docs", "list", "--source", "[[["),
        # tools
        c(3, "tools", "call", "no_such_tool"), c(4, "tools", "call", "settings_get", "--args", "{bad"),
        c(4, "tools", "call", "settings_get", "--args", "[1]"), c(4, "tools", "call", "settings_get", "--args", '"x"'),
        c(4, "tools", "call", "settings_get", "--args", "{}"),
        c(4, "tools", "call", "settings_get", "--args", '{"key": 5}'),
        c(3, "tools", "call", "settings_get", "--args", '{"key": "no.such.key"}'),
        c(4, "tools", "call", "settings_set", "--args", '{"key": "a..b", "value": 1}'),
        c(4, "tools", "call", "settings_set", "--args", '{"key": "t.nul", "value": "a\\u0000b"}'),
        c(4, "tools", "call", "memory_search", "--args", '{"query": ""}'),
        c(4, "tools", "call", "memory_search", "--args", '{"query": "x", "limit": 0}'),
        c(4, "tools", "call", "memory_search", "--args", '{"query": "x", "limit": "5"}'),
        c(4, "tools", "call", "memory_search", "--args", '{"query": "x", "mode": "fuzzy"}'),
        c((0, 4), "tools", "call", "memory_search", "--args", '{"query": "a\\u0000b"}'),
        c(4, "tools", "call", "memory_recall", "--args", '{"query": "x", "budget": 10}'),
        c(4, "tools", "call", "record_outcome", "--args", '{"message_id": 0, "outcome": "success"}'),
        c(3, "tools", "call", "record_outcome", "--args", '{"message_id": 999999999, "outcome": "success"}'),
        c((3, 4), "tools", "call", "record_outcome", "--args", f'{{"message_id": {big}0, "outcome": "success"}}'),
        c(4, "tools", "call", "log_turn", "--args", '{"role": "wizard", "content": "x"}'),
        c(4, "tools", "call", "log_turn", "--args", "{}"),
        c(4, "tools", "call", "history_search", "--args", '{"query": "x", "context": 99}'),
        c(4, "tools", "call", "docs_list", "--args", '{"limit": 0}'),
        c(3, "tools", "call", "settings_revert", "--args", '{"key": "no.such.key"}'),
        c((3, 4), "tools", "call", "docs_ingest", "--args", json.dumps({"paths": [s["good.md"]]})),
        c(4, "tools", "call", "docs_ingest", "--allow-path", s["allowed"], "--args",
          json.dumps({"paths": ["../bad/good.md"]})),
        c(4, "tools", "call", "settings_get", "--args", "-", stdin="/dev/zero", env=zero1m),
        c(4, "tools", "call", "settings_get", "--args", deep_args), c(4, "tools", "--format", "xml"),
        # mcp
        c(4, "mcp", "--http", "abc"), c(4, "mcp", "--http", "0"), c(4, "mcp", "--http", "65536"),
        c(4, "mcp", "--http", "0.0.0.0:8765"), c(4, "mcp", "--http", "203.0.113.9:8765"),
        c(4, "mcp", "--http", "8765", env={"LTM_MCP_TOKEN": "short"}),
        c(4, "mcp", "--http", ":"), c(4, "mcp", "--http", "[::1]:x"),
        c((1, 4), "mcp", "--http", f"127.0.0.1:{busy_port}"), c((1, 4), "mcp", "--http", "203.0.113.9:8765", env=token),
        c((1, 4), "mcp", "--http", "no-such-host.invalid:8765", env=token),
        c((0, 4), "mcp", "--allow-path", "/nonexistent/dir"), c(0, "mcp", stdin=b"not json\n{}\n[1,2]\n\x00\xff\n"),
        # configuration
        c(4, "settings", "get", "k", env={"LTM_CONFIG": s["config-unknown.toml"]}),
        c(4, "settings", "get", "k", env={"LTM_CONFIG": s["good.md"] + ".missing.toml"}),
        c(4, "settings", "get", "k", env={"LTM_CONFIG": s["config-invalid.toml"]}),
        c(4, "ingest", s["good.md"], env={"LTM_CONFIG": s["config-type.toml"]}),
        c(4, "settings", "get", "k", env={"LTM_CONFIG": s["config-binary.toml"]}),
        c(4, "settings", "get", "k", env={"LTM_CONFIG": s["emptydir"]}),
        c(4, "settings", "get", "k", env={"XDG_CONFIG_HOME": s["xdg-bad"]}),
        c(4, "search", "x", env={"LTM_EMBEDDER": "nonsense"}),
        c(4, "search", "x", env={"LTM_EMBEDDING_DIMENSIONS": "0"}),
        c(4, "search", "x", env={"LTM_EMBEDDING_DIMENSIONS": "-3"}),
        c(4, "search", "x", env={"LTM_EMBEDDING_DIMENSIONS": "abc"}),
        c(4, "history", "add", "hi", "-c", "new-conv-13", env={"LTM_EMBEDDING_DIMENSIONS": "100000"}),
        c(4, "search", "x", env={"LTM_EMBEDDING_TIMEOUT": "abc"}),
        c(4, "settings", "get", "k", env={"LTM_MAX_INPUT_SIZE": "lots"}),
        c(4, "settings", "get", "k", env={"LTM_STORE": "bad name"}), c(4, "--store", "", "settings", "get", "k"),
        c((4, 6), "search", "x", env={**offline, "LTM_EMBEDDING_BASE_URL": "not a url"}),
        c((4, 5), "settings", "get", "k", env={"LTM_DATABASE_URL": "notaurl"}),
        c((4, 5), "--database-url", "notaurl", "settings", "get", "k"),
        c(5, "settings", "get", "k", env={"LTM_DATABASE_URL": "postgresql://u:p@127.0.0.1:1/x?connect_timeout=3"}),
        c((4, 5), "settings", "get", "k", env={"LTM_DATABASE_URL": "mysql://u@localhost/db"}),
        c((4, 5), "settings", "get", "k", env={"LTM_DATABASE_URL": "postgresql://[::1/x"}),
        c((4, 5), "settings", "get", "k", env={"LTM_DATABASE_URL": "postgresql://u@127.0.0.1:99999/x"}),
        c(5, "settings", "get", "k", env={"LTM_DATABASE_URL": f"postgresql://postgres@/no_such_db?host={sock_dir}"}),
        c(5, "settings", "get", "k", env={"LTM_DATABASE_URL": f"postgresql://nobody@/ltm?host={sock_dir}"}),
        c(5, "settings", "get", "k", env={"LTM_HOME": s["good.md"]}),
        c(5, "settings", "get", "k", env={"LTM_HOME": "/dev/null"}),
        c(5, "settings", "get", "k", env={"LTM_HOME": "/proc/1/ltm"}),
        c(5, "settings", "get", "k", env={"LTM_HOME": s["home-pgdata-file"]}),
        c(5, "settings", "get", "k", env={"LTM_HOME": s["home-pgdata-junk"]}),
        # migrations (last: a wrong answer here would damage the schema)
        c((3, 4), "migrate", "upgrade", "no-such-revision"),
        c((3, 4), "migrate", "downgrade", "no-such-revision", "--yes"),
        c(4, "migrate", "downgrade", "base"),
    ]
    if "encrypted.pdf" in p:
        cases[-3:-3] = [c(1, "ingest", s["encrypted.pdf"], absent="encrypted.pdf"),
                        c(1, "ingest", s["encrypted.pdf"], "--password", "wrong", absent="encrypted.pdf")]
    return cases


def run_case(ltm: Ltm, sql: Sql, case: Case) -> dict[str, Any]:
    before = sql.fingerprint()
    if isinstance(case.stdin, str):
        with open(case.stdin, "rb") as stream:
            run = ltm(*case.args, env=case.env, stdin=stream)
    else:
        run = ltm(*case.args, env=case.env, input=case.stdin)
    problems = [f"{k}: {v}" for k, v in broken(sql.invariants()).items()]
    refused = run.code not in (0, None) and not case.writes
    if refused and sql.fingerprint() != before:
        problems.append("rows changed although the command failed")
    if case.absent and sql.scalar("SELECT count(*) FROM documents WHERE source LIKE :s", s=f"%/{case.absent}"):
        problems.append(f"a document from {case.absent} exists")
    error = next((line for line in run.stderr.splitlines() if line.startswith("error:")), "")
    if not error and run.stderr.strip():
        error = run.stderr.strip().splitlines()[-1]
    return {"command": case.display(ltm.home.parent), "expected": list(case.expect), "got": run.code,
            "traceback": run.traceback, "hang": run.hung, "partial": "; ".join(problems),
            "seconds": round(run.seconds, 2), "stderr": error[:200],
            "ok": run.code in case.expect and not run.traceback and not run.hung and not problems}


def set_up_bad_store(ltm: Ltm, p: dict[str, Path]) -> dict[str, Any]:
    for args in (["settings", "set", "solo.key", "1"], ["settings", "set", "shape.grp.x", "1"],
                 ["ingest", str(p["good.md"])]):
        run = ltm(*args)
        if run.code != 0:
            raise SystemExit(f"setup failed: ltm {' '.join(args)}: {run.stderr}")
    added = ltm("history", "add", "the setup turn", "-c", "setup-conv", "--json").json()
    return {"message_id": added["message_id"]}


def bad_input_table(ltm: Ltm, sql: Sql, work: Path) -> dict[str, Any]:
    from ltm_cli.storage.server import EmbeddedServer

    inputs = make_inputs(work)
    ltm.env["LTM_STORE"] = "bad"
    setup = set_up_bad_store(ltm, inputs)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        cases = bad_inputs(inputs, setup, busy.getsockname()[1], str(EmbeddedServer(ltm.home).socket_dir))
        rows = []
        for i, case in enumerate(cases, 1):
            rows.append(run_case(ltm, sql, case))
            if i % 25 == 0:
                print(f"  {i}/{len(cases)} bad inputs run")
    for home in ("home-pgdata-file", "home-pgdata-junk"):  # never leave a server behind in a hostile home
        ltm("db", "stop", env={"LTM_HOME": str(inputs[home])})
    del ltm.env["LTM_STORE"]
    return {"cases": len(rows), "wrong_exit_code": sum(r["got"] not in r["expected"] for r in rows),
            "tracebacks": sum(r["traceback"] for r in rows), "hangs": sum(r["hang"] for r in rows),
            "partial": sum(bool(r["partial"]) for r in rows), "missed": sum(not r["ok"] for r in rows),
            "rows": rows, "passed": all(r["ok"] for r in rows)}


def print_table(rows: list[dict[str, Any]]) -> None:
    width = min(90, max(len(r["command"]) for r in rows))
    print(f"\n{'command':<{width}} | expected | got  | traceback | hang | partial")
    print("-" * (width + 48))
    for r in rows:
        command = r["command"] if len(r["command"]) <= width else r["command"][: width - 1] + "…"
        expected = ",".join(map(str, r["expected"]))
        got = "hang" if r["got"] is None else str(r["got"])
        mark = "" if r["ok"] else "   <-- MISSED"
        print(f"{command:<{width}} | {expected:<8} | {got:<4} | {'YES' if r['traceback'] else 'no':<9} | "
              f"{'YES' if r['hang'] else 'no':<4} | {r['partial'] or 'no'}{mark}")
    missed = [r for r in rows if not r["ok"]]
    if missed:
        print("\nmissed, with what ltm said:")
        for r in missed:
            extra = (" [traceback]" if r["traceback"] else "") + (f" [partial: {r['partial']}]" if r["partial"] else "")
            print(f"  {r['command']}\n      expected {r['expected']}, got {r['got']}: {r['stderr']}{extra}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 kills, 1 postmaster kill, 3 writers, all bad inputs")
    parser.add_argument("--seed", type=int, default=None, help="seed of the kill delays (default: random)")
    parser.add_argument("--section", default="1,2,3,4", help="which sections to run, e.g. 4 or 1,3")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (and say where)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "torture.json"))
    args = parser.parse_args()
    sections = {int(x) for x in args.section.split(",")}
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    kills, postmaster_kills, writers, ops = (3, 1, 3, 2) if args.quick else (20, 5, 8, 5)

    tmp = Path(tempfile.mkdtemp(prefix="ltm-torture-"))
    home, work = tmp / "home", tmp / "work"
    work.mkdir()
    ltm = Ltm(home, work)
    results: dict[str, Any] = {"quick": args.quick, "seed": seed, "python": sys.version.split()[0],
                               "cpus": os.cpu_count()}
    print(f"torture: LTM_HOME={home}, seed {seed}{', quick' if args.quick else ''}")
    started = time.perf_counter()
    try:
        start = ltm("db", "start")
        if start.code != 0:
            raise SystemExit(f"ltm db start failed: {start.stderr}")
        sql = Sql(home)
        if 1 in sections:
            print(f"\n1. ingest SIGKILLed at random moments, x{kills}")
            results["ingest_kills"] = kill_ingests(ltm, sql, kills, rng)
        if 2 in sections:
            print(f"\n2. embedded postmaster SIGKILLed, x{postmaster_kills}")
            results["postmaster_kills"] = kill_postmaster(ltm, sql, postmaster_kills)
        if 3 in sections:
            print(f"\n3. concurrent writers: {writers} per kind, {ops} writes each")
            results["concurrent_writers"] = concurrent_writers(ltm, sql, writers, ops, work)
        if 4 in sections:
            print("\n4. bad inputs")
            results["bad_inputs"] = bad_input_table(ltm, sql, work)
    finally:
        stop = ltm("db", "stop")
        results["db_stop_exit"] = stop.code
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    results["seconds"] = round(time.perf_counter() - started, 1)

    print("\nsummary")
    if "ingest_kills" in results:
        r = results["ingest_kills"]
        print(f"  1. ingest kills: {r['rounds_ok']}/{r['kills']} rounds sound ({r['killed_mid_run']} killed mid-run, "
              f"index missing at {r['index_missing_at_kill']} kills), {r['partial_documents']} partial documents, "
              f"re-runs match a clean ingest: {sum(x['matches_reference'] for x in r['rounds'])}/{r['kills']}")
    if "postmaster_kills" in results:
        r = results["postmaster_kills"]
        print(f"  2. postmaster kills: {r['ok']}/{r['kills']} next commands succeeded "
              f"(slowest {r['max_recovery_s']}s), "
              f"invariants broken: {r['broken_after'] or 'none'}")
    if "concurrent_writers" in results:
        r = results["concurrent_writers"]
        print(f"  3. concurrent writers: {sum(k['writes'] for k in r['kinds'])} writes, {r['lost']} lost, "
              f"{sum(k['failed_commands'] for k in r['kinds'])} failed, "
              f"{sum(k['duplicates'] for k in r['kinds'])} duplicated, sequences "
              f"{'contiguous' if all(k['contiguous'] for k in r['kinds']) else 'WITH GAPS'}")
    if "bad_inputs" in results:
        r = results["bad_inputs"]
        print(f"  4. bad inputs: {r['cases']} cases, {r['cases'] - r['missed']} as documented; {r['wrong_exit_code']} "
              f"wrong exit codes, {r['tracebacks']} tracebacks, {r['hangs']} hangs, {r['partial']} partial writes")
        print_table(r["rows"])
    passed = all(results[k]["passed"] for k in ("ingest_kills", "postmaster_kills", "concurrent_writers",
                                                 "bad_inputs") if k in results)
    results["passed"] = passed
    print(f"\n{'all targets met' if passed else 'TARGETS MISSED'} in {results['seconds']}s")
    save(args.out, results)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
