"""`ltm eval GOLDEN`: retrieval quality against a file of questions with known answers, and the CI gate."""

from __future__ import annotations

from typing import Any

import typer

from ltm_cli.cli.common import JSON_OPTION, STORE_OPTION, renderer, state
from ltm_cli.errors import ExitCode
from ltm_cli.parsing import read_text

_LABELS = {"hit@1": "hit@1", "hit@5": "hit@5", "hit@10": "hit@10", "mrr@10": "MRR@10", "ndcg@10": "nDCG@10"}


def eval_(
    ctx: typer.Context,
    golden: str = typer.Argument(..., help="Questions and their answers: YAML, JSON or JSONL."),
    mode: str = typer.Option("hybrid", "--mode", help="hybrid (default), vector, keyword, or all three."),
    limit: int = typer.Option(10, "--limit", "-n", help="Results per question; an answer further down is a miss."),
    baseline: str = typer.Option(None, "--baseline", help="An earlier --json result: exit 1 if a metric dropped."),
    tolerance: float = typer.Option(0.02, "--tolerance", help="How far a metric may drop below the baseline."),
    store: str = STORE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Measure retrieval: hit@1/5/10, MRR@10 and nDCG@10 for each search mode, and the questions that missed.

    Each question is asked with `ltm search`; the first result that matches one of its answers gives its rank.
    With --baseline, exit 1 when any metric fell by more than --tolerance: a CI gate for memory quality."""
    s = state(ctx, json=json_out, store=store)
    out = renderer(s)
    from ltm_cli.services.evaluate import parse_baseline, parse_golden

    max_bytes = s.config().max_input_size  # read_text: "-" is stdin, FIFOs and huge files refused
    questions = parse_golden(read_text(golden, max_bytes), golden)
    earlier = parse_baseline(read_text(baseline, max_bytes), baseline) if baseline else None
    report = s.memory().evaluate(questions, mode=mode, limit=limit, baseline=earlier, tolerance=tolerance)
    out.data(report, lambda r: _render(out, r))
    comparison = report.baseline
    if comparison is None:
        return
    for note in comparison.notes:
        out.warning(note)
    for mode_name, items in comparison.newly_missed.items():
        if items:
            out.message(f"{mode_name}: no longer in the top 10: item {', '.join(map(str, items))}")
    if comparison.drops:
        for drop in comparison.drops:
            out.error(f"{drop.mode} {_LABELS[drop.metric]} dropped {drop.baseline:.3f} → {drop.current:.3f} "
                      f"({drop.current - drop.baseline:+.3f}, tolerance {comparison.tolerance})")
        raise typer.Exit(ExitCode.FAILURE)
    out.success(f"no metric dropped by more than {comparison.tolerance} against {comparison.baseline}")


def _render(out: Any, report: Any) -> None:
    """For people: one row of metrics per mode (and its change since the baseline), then the questions missed."""
    from rich.markup import escape
    from rich.table import Table

    title = f"{escape(report.golden)}: {report.items} questions, store {escape(report.store)}"
    if report.embedder:
        title += f", {escape(report.embedder)}"
    table = Table(title=title, show_edge=False, header_style="bold")
    for column in ("mode", *_LABELS.values(), "missed"):
        table.add_column(column, justify="left" if column == "mode" else "right")
    deltas = report.baseline.deltas if report.baseline else {}
    for name, result in report.modes.items():
        table.add_row(name, *(f"{result.metrics[m]:.3f}" for m in _LABELS), str(len(result.missed)))
        if name in deltas:
            table.add_row("[dim]  vs baseline[/dim]", *(_delta(deltas[name][m]) for m in _LABELS), "")
    out.out.print(table)
    missed = sorted({item for result in report.modes.values() for item in result.missed})
    if not missed:
        return
    failed = Table(title=f"Not in the top 10 ({len(missed)})", show_edge=False, header_style="bold")
    failed.add_column("#", justify="right", no_wrap=True, min_width=2)
    # Rich shrinks every column alike when a table is too wide, ranks included: the two text columns are
    # clipped to what the terminal leaves instead.
    room = out.out.width - 3 * (len(report.modes) + 3) - sum(map(len, report.modes)) - 2
    first_width = max(20, min(48, room // 2))
    failed.add_column("question", no_wrap=True, overflow="ellipsis", max_width=max(16, min(70, room - first_width)))
    for name in report.modes:
        failed.add_column(name, justify="right", no_wrap=True, min_width=len(name))
    failed.add_column("first result instead", no_wrap=True, overflow="ellipsis", max_width=first_width)
    by_item = {name: {row.item: row for row in result.items} for name, result in report.modes.items()}
    for number in missed:
        rows = {name: by_item[name][number] for name in report.modes}
        mode, first_miss = next((name, row) for name, row in rows.items() if not row.metrics["hit@10"])
        instead = first_miss.top[0] if first_miss.top else "no results"
        failed.add_row(str(number), escape(first_miss.question),
                       *(str(row.rank) if row.rank else "—" for row in rows.values()),
                       escape((f"{mode}: " if len(rows) > 1 else "") + instead))
    out.out.print(failed)


def _delta(value: float) -> str:
    if abs(value) < 0.0005:
        return "[dim]±0[/dim]"
    return f"[{'green' if value > 0 else 'red'}]{value:+.3f}[/]"
