"""The leaderboard as pictures and a self-contained HTML page.

The page has no external assets (it must open from an MLflow artifact or a file:// URL on
an air-gapped cluster): the plots are embedded PNGs and the table sorts with a few lines
of inline JavaScript. Bold = best on a task, underline = statistically tied with the best;
published reference numbers are grey italics, their Δ rows green (ours higher) or red.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd


def _row_column(summary: pd.DataFrame) -> str:
    """The leaderboard row (``row``: method, or method @ backbone): plotting by ``method``
    alone would average backbones; plain frames without it still plot by method."""
    return "row" if "row" in summary.columns else "method"


def heatmap_png(summary: pd.DataFrame, path: Path) -> Path:
    """Rows (methods) × tasks test accuracy as a heatmap."""
    label = _row_column(summary)
    grid = summary.pivot_table(index=label, columns="task", values="test_acc")
    # keep the caller's row/column order (the leaderboard's), not pandas' alphabetical one
    grid = grid.reindex(
        index=list(dict.fromkeys(summary[label])), columns=list(dict.fromkeys(summary["task"]))
    )
    fig, ax = plt.subplots(
        figsize=(max(5.0, 1.2 + 1.1 * grid.shape[1]), 1.2 + 0.45 * grid.shape[0])
    )
    image = ax.imshow(100 * grid.to_numpy(), cmap="viridis", aspect="auto")
    ax.set_xticks(range(grid.shape[1]), grid.columns, rotation=30, ha="right")
    ax.set_yticks(range(grid.shape[0]), grid.index)
    for (i, j), value in np.ndenumerate(100 * grid.to_numpy()):
        if np.isfinite(value):
            ax.text(j, i, f"{value:.1f}", ha="center", va="center", color="w", fontsize=8)
    fig.colorbar(image, ax=ax, label="test accuracy (%)")
    ax.set_title("Test accuracy per method and task")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def pareto_axes(summary: pd.DataFrame) -> tuple[plt.Figure, plt.Axes]:
    """Flat-mean accuracy against trainable parameters, Pareto front marked.

    The x axis is symmetric-log (linear below 1): a method that adds nothing but the head
    (linear probing) sits at a labelled 0, not at a fake 10⁰.
    """
    per_method = summary.groupby(_row_column(summary), sort=False).agg(
        acc=("test_acc", "mean"), params=("trainable_params_without_head", "max")
    )
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(per_method["params"], 100 * per_method["acc"])
    for name, row in per_method.iterrows():
        ax.annotate(
            str(name),
            (row["params"], 100 * row["acc"]),
            fontsize=8,
            xytext=(3, 3),
            textcoords="offset points",
        )
    front = per_method.sort_values("params")
    front = front[front["acc"] >= front["acc"].cummax()]
    ax.step(
        front["params"],
        100 * front["acc"],
        where="post",
        color="tab:red",
        alpha=0.6,
        label="Pareto front",
    )
    ax.set_xscale("symlog", linthresh=1.0, linscale=0.5)
    ax.set_xlim(left=-0.5)
    ax.set_xlabel("trainable parameters without head (0, then log)")
    ax.set_ylabel("mean test accuracy, flat (%)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig, ax


def pareto_png(summary: pd.DataFrame, path: Path) -> Path:
    """The Pareto plot (``pareto_axes``) as a PNG."""
    fig, _ = pareto_axes(summary)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


_SORT_JS = """
document.querySelectorAll('th').forEach((th, col) => th.addEventListener('click', () => {
  const body = th.closest('table').tBodies[0];
  const asc = th.dataset.asc !== 'true'; th.dataset.asc = asc;
  const key = r => { const t = r.cells[col].dataset.v ?? r.cells[col].textContent;
                     const n = parseFloat(t); return isNaN(n) ? t : n; };
  [...body.rows].sort((a, b) => (key(a) > key(b) ? 1 : -1) * (asc ? 1 : -1))
    .forEach(r => body.appendChild(r));
}));
"""


def _html_table(table: pd.DataFrame, table_id: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    rows = []
    for record in table.itertuples(index=False):
        cells = []
        for value in record:
            text, sort_value, style = value if isinstance(value, tuple) else (value, value, "")
            cells.append(
                f'<td data-v="{html.escape(str(sort_value))}" class="{style}">'
                f"{html.escape(str(text))}</td>"
            )
        rows.append("<tr>" + "".join(cells) + "</tr>")
    ident = f' id="{table_id}"' if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _figures(images: dict[str, Path]) -> str:
    return "".join(
        f"<figure>{_img(p, n)}<figcaption>{html.escape(n)}</figcaption></figure>"
        for n, p in images.items()
    )


def _rounded(table: pd.DataFrame) -> pd.DataFrame:
    return table.map(lambda v: f"{v:.3f}" if isinstance(v, float) else v)


def html_page(
    table: pd.DataFrame,
    title: str,
    images: dict[str, Path],
    notes: str,
    sections: list[Any] | None = None,
) -> str:
    """``table`` cells may carry ``(text, sort value, style)`` tuples for best/tied marks;
    ``sections`` (``tuner.leaderboard.sections.Section``) follow as analysis sections."""
    analyses = "".join(
        f'<section id="analysis-{html.escape(s.kind)}"><h2>{html.escape(s.title)}</h2>'
        f"{_html_table(_rounded(s.summary))}{_figures(s.images)}</section>"
        for s in sections or []
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}
th {{ background: #f0f0f0; cursor: pointer; }} td:first-child {{ text-align: left; }}
td.best {{ font-weight: bold; }} td.tied {{ text-decoration: underline; }}
td.ref {{ color: #555; font-style: italic; }}
td.up {{ color: #1a7f37; }} td.down {{ color: #b3261e; }}
figure {{ display: inline-block; margin: 1em; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(notes)}</p>
{_html_table(table, "leaderboard")}
{_figures(images)}
{analyses}
<script>{_SORT_JS}</script>
</body></html>
"""


def to_markdown(table: pd.DataFrame) -> str:
    """GitHub markdown: **best**, <u>tied with best</u> (no tabulate dependency)."""

    def cell(value: Any) -> str:
        text, _, style = value if isinstance(value, tuple) else (value, value, "")
        return (
            f"**{text}**" if style == "best" else f"<u>{text}</u>" if style == "tied" else str(text)
        )

    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(False)]
    return "\n".join(lines) + "\n"
