"""The words of an index build report, shared by `rag index` and the chat's index panel."""

from __future__ import annotations

from rag.reporting import describe_report, report_changes
from rag.types import IndexReport


def test_describe_report_counts_files_chunks_and_time():
    report = IndexReport(added=["a", "b"], removed=["c"], unchanged=["d", "e", "f"], chunks=12,
                         embedded_chunks=4, seconds=0.456)
    assert describe_report(report) == (
        "2 added, 0 changed, 1 removed, 3 unchanged; 12 chunks, 4 embedded this run; 0.46 s"
    )


def test_report_changes_lists_added_changed_removed_in_that_order():
    report = IndexReport(removed=["z.txt"], changed=["y.txt"], added=["x.txt", "w.txt"], unchanged=["u.txt"])
    assert report_changes(report) == [
        ("added", "x.txt"), ("added", "w.txt"), ("changed", "y.txt"), ("removed", "z.txt"),
    ]
    assert report_changes(IndexReport()) == []
