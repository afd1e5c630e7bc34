"""A failure's traceback is logged once per run; later lines about it say where it is."""

from __future__ import annotations

import logging

from flows.bootstrap import TracebackOnce


def _record(message: str, exc: BaseException, run: str | None = "run-1") -> logging.LogRecord:
    record = logging.LogRecord("prefect.flow_runs", logging.ERROR, __file__, 1, message, (), None)
    record.exc_info = (type(exc), exc, exc.__traceback__)
    record.flow_run_id = run
    return record


def test_the_same_exception_logged_again_in_the_same_run_loses_its_traceback() -> None:
    dedup, failure = TracebackOnce(), ValueError("REFERRALS_INBOX_DIR is a file")
    first = _record("Encountered exception during execution", failure)
    again = _record("Engine execution exited with unexpected exception", failure)

    passed = (dedup.filter(first), dedup.filter(again))

    assert passed == (True, True)  # both lines are logged

    assert first.exc_info is not None
    assert again.exc_info is None
    assert again.getMessage() == (
        "Engine execution exited with unexpected exception (ValueError: traceback logged above)"
    )


def test_a_copy_read_back_from_a_task_state_counts_as_the_same_failure() -> None:
    dedup = TracebackOnce()
    dedup.filter(_record("Task run failed", KeyError("reward")))
    copy = _record("Encountered exception during execution", KeyError("reward"))

    dedup.filter(copy)

    assert copy.exc_info is None


def test_another_run_or_another_failure_keeps_its_traceback() -> None:
    dedup = TracebackOnce()
    dedup.filter(_record("failed", ValueError("x")))
    other_run = _record("failed", ValueError("x"), run="run-2")
    other_failure = _record("failed", ValueError("y"))

    dedup.filter(other_run)
    dedup.filter(other_failure)

    assert other_run.exc_info is not None
    assert other_failure.exc_info is not None


class _Uncomparable:
    def __eq__(self, other: object) -> bool:
        raise TypeError("ambiguous")

    __hash__ = object.__hash__


def test_exceptions_whose_arguments_cannot_be_compared_never_break_logging() -> None:
    dedup = TracebackOnce()
    dedup.filter(_record("failed", ValueError(_Uncomparable())))
    later = _record("failed", ValueError(_Uncomparable()))

    assert dedup.filter(later)
    assert later.exc_info is not None


def test_the_engines_failed_run_keeps_its_line_but_not_its_engine_only_traceback() -> None:
    from prefect.exceptions import FailedRun

    record = _record(
        "Engine execution exited with unexpected exception",
        FailedRun("REFERRALS_INBOX_DIR (/x) is not a folder: it is a file"),
    )

    assert TracebackOnce().filter(record)

    assert record.exc_info is None
    assert record.getMessage() == (
        "Engine execution exited with unexpected exception "
        "(FailedRun: REFERRALS_INBOX_DIR (/x) is not a folder: it is a file)"
    )
