"""``bench._compare``: the same benchmark run twice, its targets' figures side by side."""

from __future__ import annotations

import pytest

from bench import _compare, _report


def run(*targets: dict[str, object]) -> dict[str, object]:
    return {"bench": "x", "targets": list(targets)}


def test_figures_within_fifteen_percent_of_each_other_count_as_repeatable() -> None:
    first = run(_report.target("rate", ">= 100", 200.0, True, unit="/s"))
    second = run(_report.target("rate", ">= 100", 180.0, True, unit="/s"))

    (row,) = _compare.compare(first, second)

    assert row["spread"] == pytest.approx(0.10)
    assert row["within"] is True
    assert row["met"] is True


def test_figures_further_apart_are_not_repeatable_and_a_miss_in_either_run_is_a_miss() -> None:
    first = run(_report.target("rate", ">= 100", 200.0, True))
    second = run(_report.target("rate", ">= 100", 99.0, False))

    (row,) = _compare.compare(first, second)

    assert row["within"] is False
    assert row["met"] is False


def test_a_target_missing_from_the_second_run_is_reported_not_skipped() -> None:
    first = run(_report.target("rate", ">= 100", 200.0, True))

    (row,) = _compare.compare(first, run())

    assert row["second"] is None
    assert row["within"] is False
    assert row["met"] is False


def test_a_figure_in_words_repeats_when_both_runs_read_the_same() -> None:
    first = run(_report.target("paid by the listener", "all", "3 of 3", True))
    same = run(_report.target("paid by the listener", "all", "3 of 3", True))
    other = run(_report.target("paid by the listener", "all", "2 of 3", False))

    (row,) = _compare.compare(first, same)
    (differs,) = _compare.compare(first, other)

    assert (row["spread"], row["within"], row["met"]) == (0.0, True, True)
    assert (differs["spread"], differs["within"], differs["met"]) == (None, False, False)


def test_two_zero_figures_are_the_same_figure() -> None:
    assert _compare.spread(0.0, 0.0) == 0.0


def test_the_targets_table_prints_every_target_with_wanted_measured_and_met(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _report.targets(
        [
            _report.target("ingest records/s", ">= 200,000", 250_000.0, True, unit="/s"),
            _report.target("peak memory", "<= 1,024", 1_500.0, False, unit="MB"),
        ]
    )

    out = capsys.readouterr().out
    assert "Targets" in out
    assert "ingest records/s" in out
    assert ">= 200,000" in out
    assert "250,000" in out
    lines = out.splitlines()
    assert lines[-2].rstrip().endswith("yes")
    assert lines[-1].rstrip().endswith("NO")


def test_the_cycle_targets_need_their_sizes_and_judge_growth_against_ten_times() -> None:
    from bench import cycle

    def sized(n: int, total: float, share: float) -> dict[str, object]:
        return {"n": n, "total_s": total, "overhead_share": share}

    assert cycle.cycle_targets([sized(10_000, 5.0, 0.2)]) == []

    goals = {
        g["name"]: g
        for g in cycle.cycle_targets([sized(100_000, 50.0, 0.04), sized(1_000_000, 560.0, 0.01)])
    }

    assert goals["whole cycle, 1,000,000 customers"]["met"] is True
    growth = goals["time 100k -> 1M over linear (x10)"]
    assert growth["measured"] == pytest.approx(1.12)
    assert growth["met"] is False
    assert goals["Prefect's share at 100,000"]["measured"] == pytest.approx(4.0)
    assert goals["Prefect's share at 100,000"]["met"] is True
