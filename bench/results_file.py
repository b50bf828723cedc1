"""Where benchmarks keep their figures: bench/results/<name>.json, merged by key across runs."""

from __future__ import annotations

import json
from pathlib import Path


def save(path: str | Path, results: dict, *, merge: bool = False) -> None:
    """Write the figures (keeping other keys a previous run wrote when `merge`), and say where."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(out.read_text()) if merge and out.exists() else {}
    previous.update(results)
    out.write_text(json.dumps(previous, indent=2))
    print(f"wrote {out}")
