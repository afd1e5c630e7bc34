"""The local Prefect stack is never open: a generated secret, kept owner-only, and no
listening beyond this machine without one."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from integrations.prefect_stack import LocalStack, StackError, check_exposure, loopback


def test_the_stack_generates_its_auth_secret_once_readable_by_its_owner_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PREFECT_SERVER_API_AUTH_STRING", raising=False)
    stack = LocalStack(tmp_path, home=tmp_path / "prefect", run_dir=tmp_path / "run")
    secret = stack.auth_string
    user, password = secret.split(":", 1)
    assert user == "referrals"
    assert len(password) >= 32
    assert stat.S_IMODE(stack.auth_file.stat().st_mode) == 0o600
    assert LocalStack(tmp_path, home=tmp_path / "prefect").auth_string == secret
    env = stack.env()
    assert env["PREFECT_SERVER_API_AUTH_STRING"] == env["PREFECT_API_AUTH_STRING"] == secret


def test_a_secret_from_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_SERVER_API_AUTH_STRING", "ops:from-the-secret-store")
    stack = LocalStack(tmp_path, home=tmp_path / "prefect")
    assert stack.auth_string == "ops:from-the-secret-store"
    assert not stack.auth_file.exists()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_addresses_are_this_machine_only(host: str) -> None:
    assert loopback(host)
    check_exposure(host, None)


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.5", "::", "example.com"])
def test_any_other_address_needs_an_auth_string(host: str) -> None:
    assert not loopback(host)
    with pytest.raises(StackError, match="without authentication"):
        check_exposure(host, None)
    check_exposure(host, "ops:secret")
