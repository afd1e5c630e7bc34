"""bench.shards runs end to end on a tiny N and ends with its JSON line (no timing is
asserted: the project measures performance with ``bench/``, never with timed tests)."""

from __future__ import annotations

import json

import pytest

from bench import shards


def test_the_shards_bench_reports_each_shard_and_every_ask_sent_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    shards.main(["--n", "300", "--shards", "3", "--workers", "2"])

    out = capsys.readouterr().out
    figures = json.loads(out.strip().splitlines()[-1])
    assert figures["bench"] == "shards"
    assert [s["shard"] for s in figures["per_shard"]] == [0, 1, 2]
    assert sum(s["asks"] for s in figures["per_shard"]) == 300
    assert figures["exactly_once_unsharded"] is True
    assert figures["exactly_once_sequential"] is True
    assert figures["exactly_once_parallel"] is True
    assert figures["shards_done_once"] is True
    assert sorted(i for taken in figures["parallel_shards_per_worker"] for i in taken) == [0, 1, 2]
    assert {t["name"] for t in figures["targets"]} >= {
        "every ask sent exactly once, every shard done once"
    }
    assert "Targets" in out
