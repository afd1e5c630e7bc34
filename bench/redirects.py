"""The tracked link under load: redirects per second, latency, and no click lost.

Starts the link app as ``referrals web serve`` does (a subprocess of ``python -m
flows.cli web serve``, the embedded defaults, a fresh SQLite ledger in a temporary
folder with ``--codes`` referrers), then fires link clicks at it from a client in
another process: ``--concurrency`` keep-alive HTTP/1.1 connections on raw asyncio
sockets, each sending one ``GET /r/<code>`` after the other. Each click carries a
visitor cookie of its own, so every stored row names the click it came from (by the
keyed hash of its visitor id, computed here with the same key): the check is exact.

* ``steady``: ``--n`` clicks (1 in 20 from a link previewer's User-Agent, stored as a
  bot); redirects/s over the run and the client's p50/p99 latency. The server is then
  stopped with SIGTERM and every click answered must be stored, once.
* ``sigterm``: the server is started again and ``--n``/5 clicks fired; mid-run it gets
  SIGTERM. The clicks answered (302) before the stop must all be stored, once; clicks
  sent but never answered may or may not be (the connection closed under them).

Measured on the 2-CPU reference machine (commit 81f899f), SQLite, the server and the
client sharing the two cores with other engineers' test runs (load average given)::

    clicks  conn  load  redirects/s  p50 ms  p99 ms  lost  duplicates  server CPU/click
    50,000  8     ~3    2,266        2.9     14.0    0     0           322 us
    50,000  8     ~6    1,414        3.2     30.8    0     0           337 us

At 177a9b8 (2026-12-06), the machine otherwise quiet (load ~1.7), 1 server worker::

    50,000  8     ~1.7  4,234        1.5      8.5    0     0           255 us

About 60 us of the server's CPU per click is the app; the rest is uvicorn's pure-Python
HTTP parser (h11) and the kernel's loopback send (README "Referral links").

    python -m bench.redirects [--n N] [--concurrency C]
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import _report

DEFAULT_N = 50_000
DEFAULT_CONCURRENCY = 8
DEFAULT_CODES = 100
TARGET_PER_S = 2_000
TARGET_P99_MS = 20.0
BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
PREVIEWER = "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)"
BOT_EVERY = 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _seed(database: Path, codes: int) -> list[str]:
    """A migrated ledger with ``codes`` referrers, each with a code; their codes."""
    from sqlalchemy import insert

    from domain.codes import new_referral_code
    from integrations.ledger.engine import make_engine
    from integrations.ledger.migrate import upgrade
    from integrations.ledger.tables import ContactRow, ReferralCodeRow

    engine = make_engine(f"sqlite:///{database}")
    upgrade(engine)
    now = datetime.now(UTC)
    made = [new_referral_code() for _ in range(codes)]
    with engine.begin() as conn:
        conn.execute(
            insert(ContactRow),
            [
                {
                    "contact_id": f"bench-referrer-{i}",
                    "name": f"Referrer {i}",
                    "referrer_type": "customer",
                    "opted_out": False,
                    "updated_at": now,
                }
                for i in range(codes)
            ],
        )
        conn.execute(
            insert(ReferralCodeRow),
            [
                {"code": code, "contact_id": f"bench-referrer-{i}", "created_at": now}
                for i, code in enumerate(made)
            ],
        )
    engine.dispose()
    return made


def _stored(database: Path) -> list[tuple[str, str]]:
    """(visitor hash, visitor kind) of every stored click."""
    import sqlite3

    with sqlite3.connect(database) as conn:
        return list(conn.execute("SELECT visitor_hash, visitor_kind FROM link_clicks"))


class Server:
    """``referrals web serve`` in a subprocess."""

    def __init__(self, env: dict[str, str], port: int, log: Path, workers: int = 1) -> None:
        self.port = port
        self._log = log.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flows.cli",
                "web",
                "serve",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                    break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the link server did not start; see {log}") from None
                time.sleep(0.1)
        self.started_cpu = _process_cpu(self.process.pid)

    def stop(self) -> int:
        """SIGTERM, then wait for the graceful stop; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=60)
        finally:
            if self.process.poll() is None:
                self.process.kill()
            self._log.close()
        return code


def _process_cpu(pid: int) -> float:
    """CPU seconds (user + system) ``pid`` has used so far (0 where /proc is absent)."""
    stat = Path(f"/proc/{pid}/stat")
    if not stat.exists():
        return 0.0
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    import resource

    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def _client(port: int, codes: list[str], first: int, n: int, concurrency: int) -> dict[str, Any]:
    """Run ``n`` clicks in another process; what it answered."""
    spec = json.dumps(
        {"port": port, "codes": codes, "first": first, "n": n, "concurrency": concurrency}
    )
    return _start_client(spec).result()


class _ClientRun:
    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process

    def started(self) -> None:
        """Wait until the client has its first answer."""
        assert self.process.stdout is not None
        self.process.stdout.readline()

    def result(self) -> dict[str, Any]:
        out, _ = self.process.communicate(timeout=3600)
        if self.process.returncode != 0:
            raise RuntimeError("the bench client failed")
        figures: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return figures


def _start_client(spec: str) -> _ClientRun:
    return _ClientRun(
        subprocess.Popen(
            [sys.executable, "-m", "bench.redirects", "--client", spec],
            stdout=subprocess.PIPE,
            text=True,
        )
    )


def visitor_id(i: int) -> str:
    return f"bench-visitor-{i:012d}"


async def _fire(spec: dict[str, Any]) -> dict[str, Any]:
    """The client: ``n`` clicks over ``concurrency`` keep-alive connections."""
    import resource

    codes: list[str] = spec["codes"]
    numbers = iter(range(spec["first"], spec["first"] + spec["n"]))
    answered: list[int] = []
    sent: list[int] = []
    latencies: list[float] = []
    errors = 0

    async def connection() -> None:
        nonlocal errors
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", spec["port"])
        except OSError:
            errors += 1
            return
        try:
            for i in numbers:
                agent = PREVIEWER if i % BOT_EVERY == 0 else BROWSER
                request = (
                    f"GET /r/{codes[i % len(codes)]} HTTP/1.1\r\nHost: links.bench\r\n"
                    f"User-Agent: {agent}\r\nCookie: rv={visitor_id(i)}\r\n\r\n"
                ).encode()
                began = time.perf_counter()
                sent.append(i)
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if length:
                    await reader.readexactly(length)
                latencies.append(time.perf_counter() - began)
                if head.startswith(b"HTTP/1.1 302"):
                    if not answered:
                        print("started", flush=True)  # the SIGTERM run waits for this
                    answered.append(i)
                else:
                    errors += 1
                if b"connection: close" in head.lower():
                    break
        except (OSError, asyncio.IncompleteReadError):
            errors += 1
        finally:
            writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(spec["concurrency"])))
    seconds = time.perf_counter() - began
    latencies.sort()

    def quantile(q: float) -> float:
        if not latencies:
            return 0.0
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    used = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "cpu_s": used.ru_utime + used.ru_stime,
        "sent": sent,
        "answered": answered,
        "errors": errors,
        "seconds": seconds,
        "p50_ms": quantile(0.50),
        "p99_ms": quantile(0.99),
        "max_ms": latencies[-1] * 1000 if latencies else 0.0,
    }


def _check(
    key: bytes, database: Path, sent: Sequence[int], answered: Sequence[int]
) -> dict[str, Any]:
    """Every answered click stored once; nothing stored that was not sent."""
    rows = _stored(database)
    by_hash: dict[str, int] = {}
    for visitor, _ in rows:
        by_hash[visitor] = by_hash.get(visitor, 0) + 1

    def hashed(i: int) -> str:
        return hmac.new(key, visitor_id(i).encode(), hashlib.sha256).hexdigest()

    sent_hashes = {hashed(i) for i in sent}
    lost = sum(1 for i in answered if hashed(i) not in by_hash)
    return {
        "stored": len(rows),
        "stored_bots": sum(1 for _, kind in rows if kind == "bot"),
        "lost": lost,
        "duplicates": sum(count - 1 for count in by_hash.values()),
        "unknown": sum(1 for h in by_hash if h not in sent_hashes),
    }


def run(n: int, concurrency: int, codes_count: int, workers: int = 1) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-redirects-") as tmp:
        root = Path(tmp)
        database = root / "links.db"
        codes = _seed(database, codes_count)
        key = secrets.token_hex(32)
        env = {
            **os.environ,
            "REFERRALS_DATABASE_URL": f"sqlite:///{database}",
            "REFERRALS_VISITOR_KEY": key,
            "REFERRALS_VISITOR_KEY_FILE": str(root / "visitor.key"),
        }
        log = root / "server.log"

        server = Server(env, _free_port(), log, workers)
        steady = _client(server.port, codes, 0, n, concurrency)
        # The server's CPU for the run: all it used (its workers' too, once reaped),
        # less what the serving process had used when it was ready.
        before = _children_cpu()
        steady_exit = server.stop()
        server_cpu = _children_cpu() - before - server.started_cpu
        steady_check = _check(key.encode(), database, steady["sent"], steady["answered"])
        rate = _report.rate(len(steady["answered"]), steady["seconds"])

        stop_n = max(n // 5, 100)
        server = Server(env, _free_port(), log, workers)
        client = _start_client(
            json.dumps(
                {
                    "port": server.port,
                    "codes": codes,
                    "first": n,
                    "n": stop_n,
                    "concurrency": concurrency,
                }
            )
        )
        # SIGTERM about halfway through the run, at the steady run's pace.
        client.started()
        time.sleep(min(30.0, 0.5 * stop_n / rate) if rate > 0 else 0.5)
        sigterm_exit = server.stop()
        stopped = client.result()
        stop_check = _check(
            key.encode(), database, steady["sent"] + stopped["sent"], steady["answered"]
        )
        sigterm_check = _check(
            key.encode(), database, steady["sent"] + stopped["sent"], stopped["answered"]
        )
        server_log = log.read_text(errors="replace")[-2000:]

    figures: dict[str, Any] = {
        "bench": "redirects",
        "n": n,
        "concurrency": concurrency,
        "codes": codes_count,
        "workers": workers,
        "redirects_per_s": rate,
        "p50_ms": steady["p50_ms"],
        "p99_ms": steady["p99_ms"],
        "max_ms": steady["max_ms"],
        "server_cpu_us_per_click": server_cpu / n * 1e6,
        "client_cpu_us_per_click": steady["cpu_s"] / n * 1e6,
        "steady": {
            "answered": len(steady["answered"]),
            "errors": steady["errors"],
            "seconds": steady["seconds"],
            "server_exit": steady_exit,
            **steady_check,
        },
        "sigterm": {
            "sent": len(stopped["sent"]),
            "answered": len(stopped["answered"]),
            "errors": stopped["errors"],
            "server_exit": sigterm_exit,
            "lost": sigterm_check["lost"],
            "duplicates": stop_check["duplicates"],
            "unknown": stop_check["unknown"],
            "stored": stop_check["stored"] - steady_check["stored"],
        },
        "target_per_s": TARGET_PER_S,
        "target_p99_ms": TARGET_P99_MS,
    }
    figures["no_click_lost"] = (
        steady_check["lost"] == 0
        and steady_check["duplicates"] == 0
        and steady_check["unknown"] == 0
        and steady_check["stored"] == len(steady["answered"])
        and sigterm_check["lost"] == 0
        and stop_check["duplicates"] == 0
        and stop_check["unknown"] == 0
    )
    figures["target_met"] = bool(
        rate >= TARGET_PER_S and steady["p99_ms"] < TARGET_P99_MS and figures["no_click_lost"]
    )
    wrong = (
        sum(check[key] for check in (steady_check, stop_check) for key in ("duplicates", "unknown"))
        + steady_check["lost"]
        + sigterm_check["lost"]
    )
    if steady_check["stored"] != len(steady["answered"]):
        wrong += abs(steady_check["stored"] - len(steady["answered"]))
    figures["targets"] = [
        _report.target("redirects/s", f">= {TARGET_PER_S:,}", rate, rate >= TARGET_PER_S),
        _report.target(
            "p99 latency",
            f"< {TARGET_P99_MS:.0f}",
            steady["p99_ms"],
            steady["p99_ms"] < TARGET_P99_MS,
            unit="ms",
        ),
        _report.target("clicks lost, doubled or unknown", "0", wrong, wrong == 0),
    ]  # fmt: skip
    if not figures["no_click_lost"]:
        figures["server_log_tail"] = server_log
    figures.update(_report.machine())
    return figures


def print_tables(f: dict[str, Any]) -> None:
    _report.title(
        f"Tracked link: {f['n']:,} clicks over {f['concurrency']} keep-alive connections, "
        f"{f['codes']} codes, {f['workers']} server worker(s), SQLite"
    )
    s, t = f["steady"], f["sigterm"]
    _report.table(
        ["run", "answered", "stored", "bots", "lost", "duplicates", "redirects/s", "p50 ms",
         "p99 ms"],
        [
            ["steady", s["answered"], s["stored"], s["stored_bots"], s["lost"],
             s["duplicates"], f["redirects_per_s"], f["p50_ms"], f["p99_ms"]],
            ["SIGTERM mid-run", t["answered"], t["stored"], "-", t["lost"], t["duplicates"],
             "-", "-", "-"],
        ],
    )  # fmt: skip
    print(
        f"CPU per click: server {f['server_cpu_us_per_click']:.0f} us (one core answers at "
        f"most {1e6 / max(f['server_cpu_us_per_click'], 1):,.0f}/s), client "
        f"{f['client_cpu_us_per_click']:.0f} us"
    )
    _report.targets(f["targets"])


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--client"]:
        figures = asyncio.run(_fire(json.loads(args[1])))
        print(json.dumps(figures))
        return figures
    p = _report.parser(
        "Link clicks against `referrals web serve`: rate, latency, every click stored once.",
        DEFAULT_N,
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        help=f"keep-alive connections of the client (default {DEFAULT_CONCURRENCY})",
    )
    p.add_argument(
        "--codes",
        type=int,
        default=DEFAULT_CODES,
        help=f"referrers (codes) the clicks are spread over (default {DEFAULT_CODES})",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes (`referrals web serve --workers`; default 1, the default)",
    )
    parsed = p.parse_args(args)
    figures = run(parsed.n, parsed.concurrency, parsed.codes, parsed.workers)
    print_tables(figures)
    _report.emit_json(figures)
    return figures


if __name__ == "__main__":
    main()
