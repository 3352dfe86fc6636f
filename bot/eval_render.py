"""`citebot eval` output: the report as text for a terminal, and the recall@k chart."""

from __future__ import annotations

from pathlib import Path

from index import CURVE_DEPTH, CitebotError, EvalReport

from .render import safe


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def render_eval(report: EvalReport, name: str = "") -> str:
    """Metrics on one line, then refusal rates, then each missed question."""
    k = report.k
    head = f"{safe(name)}: " if name else ""
    lines = [f"{head}{len(report.answerable)} answerable of {len(report.outcomes)} questions",
             "  " + "  ".join(f"recall@{c}={_pct(report.recall(c))}" for c in report.cutoffs)
             + f"  MRR@{k}={_pct(report.mrr())}  nDCG@{k}={_pct(report.ndcg())}"]
    unans = report.refusal_rate(False)
    if unans is not None or report.refusal_rate(True) is not None:
        lines.append(f"  refusal rate, unanswerable: {_pct(unans)} of "
                     f"{len(report.unanswerable)} (should be 1.00)")
        lines.append(f"  refusal rate, answerable:   {_pct(report.refusal_rate(True))} of "
                     f"{len(report.answerable)} (false refusals, should be 0.00)")
        lines.append(f"  answered hedged:            {_pct(report.hedged_rate(True))} of the "
                     f"answerable, {_pct(report.hedged_rate(False))} of the unanswerable "
                     f"(counted as answered)")
        lines.append(f"  answer hit, answerable:     {_pct(report.answer_hit_rate())}   "
                     f"accuracy (answered right + rightly refused) / all: "
                     f"{_pct(report.accuracy())}")
    misses = report.misses()
    if misses:
        lines.append(f"missed (no hit in the top {k}):")
    for o in misses:
        where = f"first hit at {o.first_hit}" if o.first_hit else "no hit"
        lines.append(safe(f"  {o.question.id}  {o.question.query}  [{where}]"))
        lines.append(safe(f"      top: {o.top_source or '-'}: {o.top_snippet}"))
    refused = [o for o in report.answerable if o.answered is False]
    if refused:
        lines.append("refused although answerable:")
        lines += [safe(f"  {o.question.id}  {o.question.query}") for o in refused]
    return "\n".join(lines)


def save_plot(report: EvalReport, path: str | Path, title: str = "") -> None:
    """Write recall@k for k = 1..20 as a PNG line chart."""
    import matplotlib

    matplotlib.use("Agg")  # no display: the chart only goes to a file
    import matplotlib.pyplot as plt

    depth = max(report.k, CURVE_DEPTH)
    ks = list(range(1, depth + 1))
    curve = report.curve(depth)
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    try:
        ax.plot(ks, curve, marker="o", markersize=4, linewidth=1.8, color="#1f77b4")
        for c in (1, 5, 10):
            if c <= depth:
                ax.annotate(f"{curve[c - 1]:.2f}", (c, curve[c - 1]), textcoords="offset points",
                            xytext=(0, 8), ha="center", fontsize=9)
        ax.set_xlabel("k (passages retrieved)")
        ax.set_ylabel("recall@k")
        ax.set_xticks([1, *range(5, depth + 1, 5)])
        ax.set_xlim(0.5, depth + 0.5)
        ax.set_ylim(0, 1.08)
        ax.grid(True, alpha=0.3)
        ax.set_title(f"{title or 'recall@k'} ({len(report.answerable)} answerable questions)")
        fig.tight_layout()
        fig.savefig(path, format="png")
    except OSError as exc:
        raise CitebotError(f"cannot write the plot to {path}: {exc.strerror or exc}") from exc
    finally:
        plt.close(fig)
