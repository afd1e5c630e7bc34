"""A local Prefect stack: server, process work pool, deployments and a worker.

Started in the background with PID files under ``run_dir`` and stopped by those PIDs;
``make up``/``make down``, the demo and the server tests all use this. The server is
never open: it requires Prefect's basic auth (``PREFECT_SERVER_API_AUTH_STRING``), with
a secret generated on first start into ``<home>/api-auth`` (readable by its owner only),
and every process of the stack and the CLI authenticate with it
(``PREFECT_API_AUTH_STRING``). It binds 127.0.0.1 unless told otherwise, and refuses a
non-loopback address without auth. Every child gets ``PREFECT_HOME`` inside the project
so nothing leaks into the user's ``~/.prefect``.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from integrations.local_secrets import read_or_make_secret

WORK_POOL = "referrals"
#: The process name (PID file, log) of the approval listener (``referrals approvals listen``).
LISTENER = "approval-listener"
#: The process name (PID file, log) of the demo's local Stripe stand-in.
STAND_IN = "stripe-stand-in"


class StackError(RuntimeError):
    """The local Prefect stack could not be started or reached."""


_DEPLOY_FILE_HEADER = (
    "# Written by `referrals up` from prefect.yaml, with the schedules, paused flags\n"
    "# and parameters kept from the server (changed in the UI). Not to be edited.\n"
)


@dataclass(frozen=True)
class Drift:
    """One way a deployment on the server differs from prefect.yaml."""

    deployment: str
    item: str  # "schedules", "paused" or "parameters"
    server: str
    prefect_yaml: str
    kept: bool

    def __str__(self) -> str:
        outcome = (
            "kept (referrals up --reset-schedules puts prefect.yaml's back)"
            if self.kept
            else "put back to prefect.yaml's"
        )
        return (
            f"{self.deployment}: {self.item} on the server {self.server}, "
            f"in prefect.yaml {self.prefect_yaml}: {outcome}"
        )


def load_deploy_config(path: Path) -> dict[str, Any]:
    """prefect.yaml as plain data (its YAML anchors expanded)."""
    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(loaded, dict):
        raise StackError(f"{path} is not a mapping of deployments")
    return loaded


def schedule_config(deployment_schedule: Any) -> dict[str, Any]:
    """A server's deployment schedule as a prefect.yaml ``schedules`` entry."""
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule

    schedule = deployment_schedule.schedule
    entry: dict[str, Any]
    if isinstance(schedule, CronSchedule):
        entry = {"cron": schedule.cron, "timezone": schedule.timezone, "day_or": schedule.day_or}
    elif isinstance(schedule, IntervalSchedule):
        entry = {
            "interval": schedule.interval.total_seconds(),
            "anchor_date": schedule.anchor_date.isoformat() if schedule.anchor_date else None,
            "timezone": schedule.timezone,
        }
    else:
        entry = {"rrule": schedule.rrule, "timezone": schedule.timezone}
    entry["active"] = deployment_schedule.active
    if deployment_schedule.parameters:
        entry["parameters"] = dict(deployment_schedule.parameters)
    if deployment_schedule.slug:
        entry["slug"] = deployment_schedule.slug
    return {key: value for key, value in entry.items() if value is not None}


def _schedule_key(entry: Mapping[str, Any]) -> tuple[Any, ...]:
    """What makes two schedules run the same flow at the same times the same way.

    An interval's anchor date is left out: the server fills one in when none is given.
    """
    if "cron" in entry:
        what: tuple[Any, ...] = ("cron", entry["cron"], bool(entry.get("day_or", True)))
    elif "interval" in entry:
        what = ("interval", float(entry["interval"]))
    else:
        what = ("rrule", entry.get("rrule"))
    return (
        *what,
        entry.get("timezone") or "UTC",
        bool(entry.get("active", True)),
        repr(sorted((entry.get("parameters") or {}).items())),
    )


def describe_schedules(entries: Sequence[Mapping[str, Any]]) -> str:
    """Schedules in a few words, e.g. ``[cron '0 7 * * 1-5' Europe/Paris, active]``."""
    if not entries:
        return "[none]"
    words = []
    for entry in entries:
        kind = next(key for key in ("cron", "interval", "rrule") if key in entry)
        state = "active" if entry.get("active", True) else "inactive"
        tz = entry.get("timezone") or "UTC"
        words.append(f"{kind} {entry[kind]!r} {tz}, {state}")
    return "[" + "; ".join(words) + "]"


def compare_deployment(spec: Mapping[str, Any], current: Any) -> list[tuple[str, str, str]]:
    """How ``current`` (a deployment read from the server) differs from its
    prefect.yaml entry ``spec``: (item, server's value, prefect.yaml's value)."""
    found: list[tuple[str, str, str]] = []
    wanted_schedules = list(spec.get("schedules") or [])
    server_schedules = [schedule_config(item) for item in current.schedules]
    if sorted(map(_schedule_key, wanted_schedules)) != sorted(map(_schedule_key, server_schedules)):
        found.append(
            (
                "schedules",
                describe_schedules(server_schedules),
                describe_schedules(wanted_schedules),
            )
        )
    wanted_paused = bool(spec.get("paused", False))
    if bool(current.paused) != wanted_paused:
        found.append(("paused", str(bool(current.paused)), str(wanted_paused)))
    wanted_parameters = dict(spec.get("parameters") or {})
    if dict(current.parameters or {}) != wanted_parameters:
        found.append(("parameters", repr(current.parameters), repr(wanted_parameters)))
    return found


def keep_or_reset(spec: dict[str, Any], current: Any, *, reset: bool) -> None:
    """Make prefect.yaml's entry ``spec`` carry what deploying it must leave in force.

    ``prefect deploy`` unpauses a deployment whose entry says nothing of ``paused``,
    so the flag is always written; with ``reset`` it is prefect.yaml's (unpaused by
    default) and so are the parameters.
    """
    if reset:
        spec["paused"] = bool(spec.get("paused", False))
        spec["parameters"] = dict(spec.get("parameters") or {})
        return
    spec["schedules"] = [schedule_config(item) for item in current.schedules]
    spec["paused"] = bool(current.paused)
    spec["parameters"] = dict(current.parameters or {})


AUTH_USER = "referrals"


def loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, auth_string: str | None) -> None:
    """Refuse to serve the Prefect API beyond this machine without authentication.

    Anyone who reaches an open Prefect API can resume a paused approval run.

    Raises:
        StackError: ``host`` is not a loopback address and there is no auth string.
    """
    if not loopback(host) and not auth_string:
        raise StackError(
            f"refusing to serve the Prefect API on {host} without authentication: "
            "set PREFECT_SERVER_API_AUTH_STRING (from a secret store) or bind 127.0.0.1"
        )


#: What ``up`` records of the stack it started, in its run directory (owner-only): the
#: port, the addresses, and the REFERRALS_* names the worker started with, each with a
#: keyed hash of its value (never the value).
STACK_RECORD = "stack.json"
#: The key of those hashes, beside the record (owner-only): without it, a hash of a
#: guessable value (a weak database password) could be tried offline.
SETTINGS_KEY = "settings-key"
#: Set by the stack for its own processes, not chosen by the user.
_STACK_SET = frozenset(
    {"REFERRALS_PREFECT_API_URL", "REFERRALS_PROJECT_DIR", "REFERRALS_PREFECT_PORT"}
)


def settings_fingerprint(env: Mapping[str, str], key: str) -> dict[str, str]:
    """Each user-chosen REFERRALS_* name of ``env`` with a keyed hash of its value."""
    return {
        name: hmac.new(key.encode(), f"{name}={value}".encode(), hashlib.sha256).hexdigest()[:32]
        for name, value in sorted(env.items())
        if name.startswith("REFERRALS_") and name not in _STACK_SET
    }


def differing_settings(recorded: Mapping[str, str], env: Mapping[str, str], key: str) -> list[str]:
    """The REFERRALS_* names set, unset or changed in ``env`` since ``recorded``."""
    seen = settings_fingerprint(env, key)
    return sorted(n for n in recorded.keys() | seen.keys() if recorded.get(n) != seen.get(n))


def read_record(run_dir: Path) -> dict[str, Any] | None:
    """What ``up`` recorded in ``run_dir``; None when there is nothing readable."""
    try:
        record = json.loads((run_dir / STACK_RECORD).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _alive(pid: int) -> bool:
    try:
        # Reap it if it is our own child that exited, or it lingers as a zombie.
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class LocalStack:
    """Where the stack lives and how to reach it."""

    project_dir: Path
    port: int = 4200
    host: str = "127.0.0.1"
    home: Path | None = None
    run_dir: Path | None = None
    extra_env: Mapping[str, str] = field(default_factory=dict)
    # Put prefect.yaml's schedules, paused flags and parameters back over the UI's.
    reset_schedules: bool = False

    def __post_init__(self) -> None:
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self.home = self.home or self.project_dir / ".prefect"
        self.run_dir = self.run_dir or self.project_dir / ".run"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def auth_file(self) -> Path:
        assert self.home is not None
        return self.home / "api-auth"

    @property
    def auth_string(self) -> str:
        """``user:password`` of the server's basic auth: PREFECT_SERVER_API_AUTH_STRING
        when set (from a secret store), else the stack's generated one."""
        given = os.environ.get("PREFECT_SERVER_API_AUTH_STRING")
        if given:
            return given
        return read_or_make_secret(
            self.auth_file, lambda: f"{AUTH_USER}:{secrets.token_urlsafe(24)}"
        )

    def client_settings(self) -> dict[Any, Any]:
        """Prefect settings that point a client at this stack, authenticated
        (for ``prefect.settings.temporary_settings``)."""
        from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL

        return {PREFECT_API_URL: self.api_url, PREFECT_API_AUTH_STRING: self.auth_string}

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The environment every Prefect process of this stack runs with."""
        env = dict(os.environ)
        env.update(
            {
                "PREFECT_HOME": str(self.home),
                "PREFECT_API_URL": self.api_url,
                # On any port but 4200 the UI would otherwise call 4200.
                "PREFECT_UI_API_URL": self.api_url,
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_SERVER_API_HOST": self.host,
                "PREFECT_SERVER_API_AUTH_STRING": self.auth_string,
                "PREFECT_API_AUTH_STRING": self.auth_string,
                "PREFECT_SERVER_API_PORT": str(self.port),
                "PREFECT_WORKER_QUERY_SECONDS": "1",
                "PREFECT_RUNNER_POLL_FREQUENCY": "2",
                "REFERRALS_PREFECT_API_URL": self.api_url,
                "REFERRALS_PROJECT_DIR": str(self.project_dir),
            }
        )
        env.update(self.extra_env)
        return env

    def _pid_file(self, name: str) -> Path:
        assert self.run_dir is not None
        return self.run_dir / f"{name}.pid"

    def _running(self, name: str) -> int | None:
        path = self._pid_file(name)
        if not path.exists():
            return None
        pid = int(path.read_text().strip() or 0)
        return pid if pid and _alive(pid) else None

    def _spawn(self, name: str, args: list[str], env: Mapping[str, str] | None = None) -> int:
        assert self.run_dir is not None
        assert self.home is not None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        with (self.run_dir / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(  # noqa: S603 (fixed argv, no shell)
                args,
                cwd=self.project_dir,
                env={**self.env(), **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # so `down` can stop the whole process group
            )
        # Kept so the child is reaped by whoever stops it, not left a zombie.
        self._children[name] = process
        self._pid_file(name).write_text(str(process.pid))
        return process.pid

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def start_server(self, timeout: float = 90) -> None:
        """Start the server unless this stack's server is already up."""
        if self._running("server") and self.healthy():
            return
        if self.healthy():
            raise StackError(
                f"something else already answers on port {self.port}; stop it or choose "
                "another port (PORT=4300 make demo)"
            )
        check_exposure(self.host, self.auth_string)
        self._spawn(
            "server",
            [_prefect(), "server", "start", "--host", self.host, "--port", str(self.port)],
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.healthy():
                return
            if not self._running("server"):
                raise StackError(f"the Prefect server exited; see {self.run_dir}/server.log")
            time.sleep(0.5)
        raise StackError(f"the Prefect server did not answer within {timeout:.0f} s")

    def prefect(self, *args: str, timeout: float = 300) -> str:
        """Run a ``prefect`` CLI command against this stack; its output."""
        result = subprocess.run(  # noqa: S603
            [_prefect(), *args],
            cwd=self.project_dir,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if result.returncode != 0:
            raise StackError(f"prefect {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
        return result.stdout

    def deploy(self, reset_schedules: bool | None = None) -> list[Drift]:
        """Create or update the process work pool and register every deployment.

        What revenue ops changed in the UI stays: for a deployment that already exists,
        its schedules (cron, timezone, active flag), paused state and parameters are the
        server's, not prefect.yaml's, unless ``reset_schedules`` (default: the stack's
        ``reset_schedules``). Everything else (entrypoint, description, tags, pool,
        concurrency, pull steps) comes from prefect.yaml. The kept values are written
        into the deploy file itself, so no moment exists where prefect.yaml's schedule
        is in force.

        Returns:
            The differences between the server and prefect.yaml, one per deployment
            and field: kept, or put back to prefect.yaml's when resetting.
        """
        reset = self.reset_schedules if reset_schedules is None else reset_schedules
        self.ensure_work_pool()
        config = load_deploy_config(self.project_dir / "prefect.yaml")
        existing = self._read_deployments()
        drifts: list[Drift] = []
        for spec in config.get("deployments", []):
            current = existing.get(spec["name"])
            if current is None:
                continue
            found = compare_deployment(spec, current)
            drifts.extend(
                Drift(spec["name"], item, server, wanted, kept=not reset)
                for item, server, wanted in found
            )
            keep_or_reset(spec, current, reset=reset)
        assert self.run_dir is not None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        deploy_file = self.run_dir / "prefect.deploy.yaml"
        deploy_file.write_text(_DEPLOY_FILE_HEADER + yaml.safe_dump(config, sort_keys=False))
        self.prefect("--no-prompt", "deploy", "--all", "--prefect-file", str(deploy_file))
        if reset:
            self._drop_schedules_prefect_yaml_lacks(config, existing)
        return drifts

    def _read_deployments(self) -> dict[str, Any]:
        """The deployments of this project's work pool on the server, by name."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import WorkPoolFilter, WorkPoolFilterName
        from prefect.settings import temporary_settings

        with (
            temporary_settings(self.client_settings()),
            get_client(sync_client=True) as client,
        ):
            found = client.read_deployments(
                work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[WORK_POOL]))
            )
        return {deployment.name: deployment for deployment in found}

    def _drop_schedules_prefect_yaml_lacks(
        self, config: Mapping[str, Any], before: Mapping[str, Any]
    ) -> None:
        """Remove schedules added in the UI to a deployment prefect.yaml gives none:
        ``prefect deploy`` leaves a deployment's schedules alone when it has none."""
        from prefect.client.orchestration import get_client
        from prefect.settings import temporary_settings

        bare = [
            before[spec["name"]]
            for spec in config.get("deployments", [])
            if not spec.get("schedules") and spec["name"] in before
        ]
        with (
            temporary_settings(self.client_settings()),
            get_client(sync_client=True) as client,
        ):
            for deployment in bare:
                for schedule in client.read_deployment_schedules(deployment.id):
                    client.delete_deployment_schedule(deployment.id, schedule.id)

    def ensure_work_pool(self) -> None:
        """The process work pool, its flow runs started by :func:`engine_command`.

        An existing pool keeps whatever was set on it (in the UI or by an earlier
        ``referrals up``), except a command that is unset or names a program this
        machine no longer has (the project or its virtual environment moved).
        """
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
        from prefect.exceptions import ObjectNotFound
        from prefect.settings import temporary_settings

        with (
            temporary_settings(self.client_settings()),
            get_client(sync_client=True) as client,
        ):
            try:
                pool = client.read_work_pool(WORK_POOL)
            except ObjectNotFound:
                client.create_work_pool(
                    WorkPoolCreate(
                        name=WORK_POOL, type="process", base_job_template=work_pool_template()
                    )
                )
                return
            template = copy.deepcopy(pool.base_job_template)
            command = template.get("variables", {}).get("properties", {}).get("command")
            if command is None or not _stale(command.get("default")):
                return
            command["default"] = engine_command()
            client.update_work_pool(WORK_POOL, WorkPoolUpdate(base_job_template=template))

    def start_worker(self, name: str = "worker", limit: int | None = None) -> bool:
        """Start the worker ``name`` unless it runs; whether it was started now.

        Args:
            name: its process name (PID file, log); another name starts one more worker
                on the pool (``down`` stops only ``worker``: stop the others by name).
            limit: the most flow runs it runs at once (``--limit``); None, no limit.
        """
        if self._running(name):
            return False
        args = [_prefect(), "worker", "start", "--pool", WORK_POOL, "--type", "process"]
        self._spawn(name, args + (["--limit", str(limit)] if limit else []))
        return True

    def start_listener(self) -> bool:
        """Start the approval listener unless it runs; whether it was started now.

        It follows the approval runs' resumes and pays an approval at once, without
        waiting for the worker to start the resumed run (``flows.approval_listener``);
        it runs with the worker's settings (the same ledger and Stripe account).
        """
        if self._running(LISTENER):
            return False
        self._spawn(LISTENER, [_referrals(), "approvals", "listen"])
        return True

    def start_web(self, port: int, *, stripe_stand_in: bool = False) -> str | None:
        """Start the referrers' web app (``referrals web serve``, tracked links and
        pages) on 127.0.0.1:``port`` unless it runs.

        Args:
            port: the web app's port.
            stripe_stand_in: also run the local Stripe stand-in
                (:mod:`integrations.payments.stripe_stand_in`, 127.0.0.1 only) and give
                its test key and address to the web app, and to it only: its Connect
                onboarding routes go there, while the worker's payouts stay as
                configured (ledger-only without a key). The two start and stop together.

        Returns:
            The stand-in's address when it runs (``None`` without one).
        """
        stand_in = self._stand_in_url() if self._running(STAND_IN) else None
        if self._running("web") and (stand_in is not None) == stripe_stand_in:
            return stand_in
        # Started together or not at all: a web app must never point at a dead stand-in.
        self.stop("web")
        self.stop(STAND_IN)
        env: dict[str, str] = {}
        if stripe_stand_in:
            from integrations.payments.stripe_stand_in import STAND_IN_KEY

            stand_in = self._start_stand_in()
            env = {"REFERRALS_STRIPE_API_KEY": STAND_IN_KEY, "REFERRALS_STRIPE_API_BASE": stand_in}
        self._spawn("web", [_referrals(), "web", "serve", "--port", str(port)], env)
        return stand_in

    def _stand_in_url(self) -> str:
        assert self.run_dir is not None
        return (self.run_dir / f"{STAND_IN}.url").read_text().strip()

    def _start_stand_in(self, timeout: float = 30) -> str:
        """Start the Stripe stand-in on a free loopback port; its address once it answers."""
        assert self.run_dir is not None
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        module = "integrations.payments.stripe_stand_in"
        self._spawn(STAND_IN, [sys.executable, "-m", module, "--port", str(port)])
        url = f"http://127.0.0.1:{port}"
        (self.run_dir / f"{STAND_IN}.url").write_text(url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                sock.settimeout(1)
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return url
            if not self._running(STAND_IN):
                break
            time.sleep(0.2)
        raise StackError(f"the Stripe stand-in did not start (see {self.run_dir}/{STAND_IN}.log)")

    def up(self) -> list[Drift]:
        """Start the server, register the deployments, start a worker and the approval
        listener.

        Returns:
            Where the server's deployments differ from prefect.yaml (see :meth:`deploy`).
        """
        self.start_server()
        drifts = self.deploy()
        started = self.start_worker()
        # With the worker's settings: a listener left from another start goes with them.
        if started:
            self.stop(LISTENER)
        self.start_listener()
        # A worker already running keeps the settings recorded when it started.
        self.write_record(self.env() if started else None)
        return drifts

    def running(self, name: str) -> int | None:
        """The PID of our process ``name`` (server or worker) when it is alive."""
        return self._running(name)

    def recorded_pid(self, name: str) -> int | None:
        """The PID recorded for ``name``, alive or not."""
        try:
            return int(self._pid_file(name).read_text().strip() or 0) or None
        except (OSError, ValueError):
            return None

    @property
    def record_file(self) -> Path:
        assert self.run_dir is not None
        return self.run_dir / STACK_RECORD

    @property
    def settings_key(self) -> str:
        """The key of the recorded settings' hashes (made on first use, owner-only)."""
        assert self.run_dir is not None
        return read_or_make_secret(self.run_dir / SETTINGS_KEY, lambda: secrets.token_hex(32))

    def write_record(self, worker_env: Mapping[str, str] | None) -> None:
        """Record where this stack answers, and with ``worker_env`` the REFERRALS_*
        settings its worker started with (names and keyed hashes only)."""
        assert self.run_dir is not None
        record = read_record(self.run_dir) or {}
        if record.get("port") != self.port:
            record.pop("worker", None)  # another stack's worker
        record.update(
            {
                "port": self.port,
                "api_url": self.api_url,
                "ui_url": self.ui_url,
                "project_dir": str(self.project_dir),
                "prefect_home": str(self.home),
                "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
        )
        if worker_env is not None:
            record["worker"] = {
                "pid": self.running("worker"),
                "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "settings": settings_fingerprint(worker_env, self.settings_key),
            }
        self.run_dir.mkdir(parents=True, exist_ok=True)
        partial = self.record_file.with_suffix(".tmp")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(record, out, indent=2)
        partial.replace(self.record_file)  # readers never see half a record

    def stop(self, name: str, grace: float = 15) -> bool:
        """Stop one of our processes (and its children) by its PID file."""
        pid = self._running(name)
        self._pid_file(name).unlink(missing_ok=True)
        if pid is None:
            # Dead already (killed, crashed) and reaped by _alive: let its Popen know,
            # or it warns at exit that the process still runs.
            gone = self._children.pop(name, None)
            if gone is not None:
                gone.poll()
            return False
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            return False
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.2)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
        child = self._children.pop(name, None)
        if child is not None:
            child.wait(timeout=grace)
        return True

    def down(self) -> list[str]:
        stopped = [
            name for name in ("web", STAND_IN, LISTENER, "worker", "server") if self.stop(name)
        ]
        # Nothing runs any more: the CLI must not look for a stack on that port.
        assert self.run_dir is not None
        (self.run_dir / f"{STAND_IN}.url").unlink(missing_ok=True)
        record = read_record(self.run_dir)
        if record is not None and record.get("port") == self.port:
            self.record_file.unlink(missing_ok=True)
        return stopped


def engine_command() -> str:
    """The command that runs one flow run: this environment's Python on prefect.engine.

    Without a command, Prefect 3.8's process worker starts a workspace supervisor
    process that imports Prefect and then starts the engine process, which imports it
    again: about a second more between an approver's resume and the payout. The worker
    runs from this environment, so the flow runs need no workspace resolution.
    """
    return shlex.join([sys.executable, "-m", "prefect.engine"])


def _stale(command: str | None) -> bool:
    """Whether a pool's command is unset or starts a program that is not here."""
    if not command:
        return True
    program = shlex.split(command)[0]
    return "/" in program and not Path(program).exists()


def work_pool_template() -> dict[str, Any]:
    """Prefect's process base job template with :func:`engine_command` as its default."""
    from prefect.workers.process import ProcessWorker

    template = ProcessWorker.get_default_base_job_template()
    template["variables"]["properties"]["command"]["default"] = engine_command()
    return template


def _prefect() -> str:
    """The ``prefect`` executable of this interpreter's environment."""
    candidate = Path(sys.executable).with_name("prefect")
    return str(candidate) if candidate.exists() else "prefect"


def _referrals() -> str:
    """The ``referrals`` executable of this interpreter's environment."""
    candidate = Path(sys.executable).with_name("referrals")
    return str(candidate) if candidate.exists() else "referrals"
