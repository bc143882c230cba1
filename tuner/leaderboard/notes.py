"""The leaderboard's note: what its numbers are, and what an unfinished sweep lacks.

Apart from ``summarise`` (the numbers) so that the wording, which grows with every kind of
row and column the table can show, has one home of its own.
"""

from __future__ import annotations

import pandas as pd

from tuner.leaderboard.collect import Records, Reference
from tuner.leaderboard.summarise import several_setups, shift_columns

NOTE = (
    "Test accuracy (%) of the best validation config per (task, method), retrained on "
    "train800val200, mean ± std over seeds. mean (flat) = mean over tasks; mean (group) = "
    "mean of the Natural/Specialized/Structured group means. Bold = best on the task; "
    "underlined = tied with the best (paired bootstrap over test examples, 95%). "
    "Device-hours = trial wall time × devices per trial (GPUs, or CPU cores without GPUs); "
    "lost device-h (shown after a crash) = trials of studies that never finished (a trial "
    "killed before it logged device-hours counts the epochs it ran)."
)


def unfinished_note(records: Records) -> str:
    """The sentence(s) an unfinished sweep and counted-once duplicates add to the note."""
    parts = []
    if records.missing:
        shown = "; ".join(m.describe() for m in records.missing[:SHOWN_MISSING])
        more = len(records.missing) - SHOWN_MISSING
        parts.append(
            f"UNFINISHED SWEEP: {len(records.missing)} (task, method) without all final runs, "
            f"so no winner is marked on their tasks: {shown}"
            + (f"; and {more} more" if more > 0 else "")
            + "."
        )
    if records.duplicates:
        left = ", ".join(d.run_id for d in records.duplicates[:SHOWN_MISSING])
        parts.append(
            f"{len(records.duplicates)} duplicate final run(s) (same final_hash and seed as "
            f"an earlier run) counted once, the first kept; left out: {left}"
            + (" ..." if len(records.duplicates) > SHOWN_MISSING else "")
            + "."
        )
    return " ".join(parts)


#: Missing studies and duplicate runs named in the note (the rest are counted)
SHOWN_MISSING = 12


def notes(
    summary: pd.DataFrame,
    references: list[Reference] | None = None,
    records: Records | None = None,
) -> str:
    """``NOTE``, plus what rows mean when backbones or protocols differ and where each
    reference's numbers come from; with ``records``, first what an unfinished sweep is
    missing and which duplicate final runs were counted once."""
    text = NOTE
    if records is not None and (records.missing or records.duplicates):
        text = unfinished_note(records) + " " + text
    if "folds" in summary and (summary["folds"] > 1).any():
        text += (
            " Subset columns with several folds (T@n#k): mean ± std over folds, each fold "
            "averaged over its seeds."
        )
    if shift_columns(summary):
        text += (
            " Columns 'TASK [shift NAME]': accuracy of the same final runs on that task's "
            "evaluation-only shift set NAME (never tuned on), mean ± std like the task's."
        )
    if several_setups(summary):
        text += (
            " Rows are method @ backbone [protocol hash where a backbone has several]: runs "
            "of different backbones or protocols are never averaged; bold and underline "
            "compare rows of the same backbone and protocol."
        )
    for ref in references or []:
        where = ref.source.get("repo", "")
        commit = str(ref.source.get("commit", ""))[:10]
        text += (
            f" Rows marked ({ref.name}): published test accuracy from {where}"
            f"{'@' + commit if commit else ''} on {ref.backbone}, shown only for tasks and "
            f"methods of rows on that backbone; Δ = ours − {ref.name}, means over the tasks "
            "both have."
        )
    return text
