"""Words for an index build report, shared by the command line and the browser chat."""

from __future__ import annotations

from rag.types import IndexReport

CHANGE_LABELS = ("added", "changed", "removed")


def describe_report(report: IndexReport) -> str:
    """One sentence with the counts of a build: files by change, chunks, time."""
    return (
        f"{len(report.added)} added, {len(report.changed)} changed, {len(report.removed)} removed, "
        f"{len(report.unchanged)} unchanged; {report.chunks} chunks, "
        f"{report.embedded_chunks} embedded this run; {report.seconds:.2f} s"
    )


def report_changes(report: IndexReport) -> list[tuple[str, str]]:
    """(label, path) for every added, changed and removed file, in that order."""
    return [(label, path) for label in CHANGE_LABELS for path in getattr(report, label)]
