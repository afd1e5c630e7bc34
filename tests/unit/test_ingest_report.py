"""The report of a read made of pages is the sum of the pages' reports."""

from __future__ import annotations

import pytest

from domain.models import IngestReport


def report(source: str, records: int, new: int, seen: int, bad: int, ref: int) -> IngestReport:
    return IngestReport(source, records, new, seen, bad, ref)


def test_two_pages_of_one_source_add_up_field_by_field_and_stay_balanced() -> None:
    first = report("files", 10, 6, 1, 1, 2)
    second = report("files", 4, 3, 0, 1, 0)

    total = first.plus(second)

    assert total == report("files", 14, 9, 1, 2, 2)
    assert total.balanced


def test_an_unbalanced_page_leaves_the_sum_unbalanced() -> None:
    assert not report("files", 10, 6, 1, 1, 2).plus(report("files", 5, 3, 0, 1, 0)).balanced


def test_reports_of_two_sources_are_not_added() -> None:
    with pytest.raises(ValueError, match="hubspot"):
        report("files", 1, 1, 0, 0, 0).plus(report("hubspot", 1, 1, 0, 0, 0))
