"""The benchmarks run end to end on a tiny N and end with their JSON line.

No timing is asserted here (the project measures performance with ``bench/``, never
with timed tests): only that each benchmark runs, cleans up, and reports sane figures.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest

from bench import cycle, detection, ingest, payouts, redirects, send_asks

N = 2000


def last_json_line(output: str) -> dict[str, Any]:
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines, "the benchmark printed nothing"
    figures = json.loads(lines[-1])
    assert isinstance(figures, dict)
    return figures


def leftover_dirs(prefix: str) -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob(f"{prefix}*"))


def positive_rate(value: object) -> bool:
    return isinstance(value, int | float) and value > 0 and math.isfinite(value)


def test_detection_bench_reports_its_figures_as_the_last_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = leftover_dirs("bench-detection-")

    detection.main(["--n", str(N), "--batch-size", "500"])

    out = capsys.readouterr().out
    figures = last_json_line(out)
    assert "Detection over 2,000 events" in out
    assert figures["bench"] == "detection"
    assert figures["n"] == figures["examined"] == N
    for key in (
        "stage_events_per_s",
        "sql_events_per_s",
        "sql_full_events_per_s",
        "detect_events_per_s",
        "ratio_stage_to_sql",
    ):
        assert positive_rate(figures[key]), key
    assert figures["target_ratio"] == 1.2
    assert figures["target_events_per_s"] == 200_000
    assert isinstance(figures["ratio_met"], bool)
    assert isinstance(figures["throughput_met"], bool)
    # Both targets are in the shared Targets table and under the JSON's ``targets``.
    assert "Targets" in out
    assert [(t["wanted"], t["measured"], t["met"]) for t in figures["targets"]] == [
        ("<= 1.2", figures["ratio_stage_to_sql"], figures["ratio_met"]),
        (">= 200,000", figures["stage_events_per_s"], figures["throughput_met"]),
    ]
    # The stage, the SQL statement and detect() in memory find the same moments.
    assert figures["counts_agree"] is True
    assert 0 < figures["moments"] == figures["sql_moments"] < N
    assert figures["moments"] == sum(figures["moments_by_type"].values())
    assert 0 < figures["detractors"] < N
    assert 0 < figures["without_contact"] < N
    assert figures["stage_batches"] == N // 500
    assert leftover_dirs("bench-detection-") == before


def test_send_asks_bench_reports_its_figures_as_the_last_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = leftover_dirs("bench-send-asks-")

    send_asks.main(["--n", str(N)])

    out = capsys.readouterr().out
    figures = last_json_line(out)
    assert "Sending 2,000 asks" in out
    assert figures["bench"] == "send_asks"
    assert figures["n"] == figures["queued_before"] == N
    assert positive_rate(figures["asks_per_s"])
    assert figures["target_requests"] == 2
    assert figures["requests"] >= figures["target_requests"]
    assert figures["requests_met"] == (figures["requests"] == figures["target_requests"])
    assert figures["http_attempts"] == figures["requests"]
    assert 0 < figures["max_personalizations"] <= 1000
    assert figures["accepted"] == N
    assert figures["failed"] == figures["retry_later"] == figures["no_address"] == 0
    assert figures["ask_statuses"] == {"accepted": N}
    assert figures["accepted_exactly_once"] is True
    # The targets: the rate (met or not, a figure), one request per 1,000 asks.
    targets = {t["name"]: t for t in figures["targets"]}
    assert positive_rate(targets["asks sent per second (whole stage)"]["measured"])
    assert targets["requests the fake accepted"]["measured"] == figures["requests"]
    assert targets["requests the fake accepted"]["met"] == figures["requests_met"]
    assert targets["every ask accepted exactly once"]["met"] is True
    assert "Targets" in out
    assert leftover_dirs("bench-send-asks-") == before


def test_n_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        detection.main(["--n", "0"])
    assert "must be at least 1" in capsys.readouterr().err


@pytest.mark.server
@pytest.mark.slow
def test_payouts_bench_pays_each_reward_once_and_reports_its_figures(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Part A only (a local Prefect server for the rate limit; no worker, no deploy)."""
    before = leftover_dirs("bench-payouts-")

    # With Stripe's second limiter too: each endpoint's own rate, at the fake and in the fleet.
    payouts.main(["--n", "40", "--workers", "2", "--endpoint-rate", "60", "--skip-latency"])

    out = capsys.readouterr().out
    figures = last_json_line(out)
    assert "Part A: paying 40 rewards" in out
    assert "100/s and 60/s per endpoint" in out
    assert figures["bench"] == "payouts"
    assert (figures["n"], figures["workers"], figures["rate_limit_per_s"]) == (40, 2, 100.0)
    assert figures["endpoint_rate_limit_per_s"] == figures["transfer_limit_per_s"] == 60.0
    for key in (
        "wall_s",
        "window_s",
        "created_per_s",
        "rate_share",
        "target_share",
        "rate_met",
        "http_429",
        "retries",
        "transfer_posts",
        "duplicates",
        "lost",
        "one_paid_entry_per_reward",
        "latency",
    ):
        assert key in figures, key
    assert positive_rate(figures["created_per_s"])
    assert isinstance(figures["rate_met"], bool)
    assert figures["worker_errors"] == []
    # Exactly once, from both sides: the fake's transfers and the ledger.
    assert figures["duplicates"] == figures["lost"] == 0
    assert figures["created"] == figures["transfers"] == 40
    assert figures["transfers_not_booked"] == 0
    assert figures["one_paid_entry_per_reward"] is True
    assert figures["reward_statuses"] == {"paid": 40}
    assert figures["latency"] is None  # --skip-latency
    assert leftover_dirs("bench-payouts-") == before


@pytest.mark.server
@pytest.mark.slow
def test_cycle_bench_times_every_stage_and_reports_its_figures_as_the_last_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two tiny companies through the real flows under a temporary Prefect server."""
    before = leftover_dirs("bench-cycle-")

    cycle.main(["--n", "40,60"])

    out = capsys.readouterr().out
    figures = last_json_line(out)
    assert "The referral cycle, 40 customers" in out
    assert "Time per stage by size" in out
    assert figures["bench"] == "cycle"
    assert figures["sizes"] == [40, 60]
    for run, n in zip(figures["runs"], (40, 60), strict=True):
        assert run["n"] == n
        assert set(run["stages"]) == {*cycle.STAGES, cycle.REPORT}
        for stage in cycle.STAGES:
            times = run["stages"][stage]
            # Every stage ran in both cycles, and its tasks' time is part of its own.
            assert times["cycle1_s"] > 0, stage
            assert times["cycle2_s"] > 0, stage
            assert 0 < times["tasks_s"] <= times["wall_s"], stage
            assert 0 <= times["overhead_share"] <= 1, stage
        assert 0 < run["overhead_s"] < run["total_s"]
        # Each figure is rounded to 0.1 ms on its own.
        assert run["tasks_s"] + run["overhead_s"] == pytest.approx(run["total_s"], abs=1e-3)
        assert positive_rate(run["customers_per_s"])
        # The cycle did its work: asked, converted, paid and notified.
        assert run["asks_queued"] > 0
        assert run["asks"] == {"accepted": run["asks_queued"]}
        assert run["conversions"] > 0
        assert run["paid"] > 0
        assert run["notifications"].get("accepted", 0) > 0
    assert leftover_dirs("bench-cycle-") == before


def test_cycle_bench_refuses_a_size_below_one(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cycle.main(["--n", "10,0"])
    assert "must be at least 1" in capsys.readouterr().err


def test_ingest_bench_reads_the_drop_as_csv_and_as_jsonl_and_both_count_the_same(
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = leftover_dirs("bench-ingest-")

    ingest.main(["--n", "300", "--page-records", "500"])

    out = capsys.readouterr().out
    figures = last_json_line(out)
    assert "File drop ingest: 300 customer accounts" in out
    assert figures["bench"] == "ingest"
    assert [r["mode"] for r in figures["runs"]] == ["baseline", "csv", "jsonl"]
    as_csv, as_jsonl = figures["runs"][1:]
    assert as_csv["records_in"] == as_jsonl["records_in"] > 500  # more than one page
    assert as_csv["balanced"] is as_jsonl["balanced"] is True
    assert figures["same_counts"] is True
    assert all(positive_rate(r["records_per_s"]) for r in (as_csv, as_jsonl))
    assert all(r["max_rss_mb"] > 0 for r in figures["runs"])
    assert [t["name"] for t in figures["targets"]] == [
        "ingest records/s, CSV (SQLite)",
        "ingest peak memory, CSV",
        "ingest records/s, JSONL (SQLite)",
        "ingest peak memory, JSONL",
    ]
    assert leftover_dirs("bench-ingest-") == before


def test_redirects_bench_stores_every_answered_click_once_also_across_a_sigterm(
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = leftover_dirs("bench-redirects-")

    redirects.main(["--n", "400", "--concurrency", "4", "--codes", "5"])

    out = capsys.readouterr().out
    figures = last_json_line(out)
    assert "Tracked link: 400 clicks over 4 keep-alive connections" in out
    assert figures["bench"] == "redirects"
    steady, stopped = figures["steady"], figures["sigterm"]
    assert steady["answered"] == steady["stored"] == 400
    assert steady["stored_bots"] == 400 // redirects.BOT_EVERY
    assert (steady["lost"], steady["duplicates"], steady["unknown"]) == (0, 0, 0)
    assert stopped["lost"] == stopped["duplicates"] == stopped["unknown"] == 0
    assert stopped["stored"] >= stopped["answered"]
    assert figures["no_click_lost"] is True
    assert positive_rate(figures["redirects_per_s"])
    assert 0 < figures["p50_ms"] <= figures["p99_ms"]
    assert isinstance(figures["target_met"], bool)
    assert leftover_dirs("bench-redirects-") == before
