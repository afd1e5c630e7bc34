"""The program rules file and the runtime settings: refused with the field and the reason."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from config.program import load_program, parse_program
from config.settings import PROJECT_ROOT, load_settings
from domain.errors import ConfigError
from domain.models import Milestone, MomentType, ReferrerType
from domain.money import Money
from domain.program import Program, RewardKind

SHIPPED = PROJECT_ROOT / "config" / "program.yaml"


def shipped_raw() -> dict[str, Any]:
    raw = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    assert isinstance(raw, dict)
    return raw


def refused(change: Callable[[dict[str, Any]], None]) -> str:
    """Apply ``change`` to the shipped rules and return the ConfigError message."""
    raw = copy.deepcopy(shipped_raw())
    change(raw)
    with pytest.raises(ConfigError) as info:
        parse_program(raw, "rules.yaml")
    return str(info.value)


# --- the shipped file ------------------------------------------------------------------


def test_the_shipped_rules_file_loads_and_reads_as_written() -> None:
    program = load_program(SHIPPED)
    raw = shipped_raw()
    assert isinstance(program, Program)
    assert program.name == raw["name"]
    assert program.currency == raw["currency"]
    assert program.holding_days == raw["holding_days"]
    assert program.auto_payout_threshold == Money.parse(
        raw["approvals"]["auto_payout_threshold"], raw["currency"]
    )
    assert program.second_approver_threshold == Money.parse(
        raw["approvals"]["second_approver_threshold"], raw["currency"]
    )
    assert [rule.id for rule in program.rewards] == [rule["id"] for rule in raw["rewards"]]
    assert program.moments.priority == tuple(MomentType(m) for m in raw["moments"]["priority"])


def test_the_shipped_rules_give_every_referrer_type_a_headline_reward() -> None:
    program = load_program(SHIPPED)
    for referrer_type in ReferrerType:
        rule = program.headline_reward(referrer_type)
        assert rule is not None
        assert rule.referrer_type is referrer_type
        assert rule.milestone is Milestone.CUSTOMER


def test_an_empty_rules_file_means_the_documented_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("", encoding="utf-8")
    program = load_program(path)
    assert program == Program()
    assert program.rewards[0].kind is RewardKind.FLAT


def test_a_percent_rule_needs_no_amount_and_a_flat_rule_no_percent() -> None:
    program = parse_program(
        {
            "rewards": [
                {
                    "id": "p",
                    "referrer_type": "partner",
                    "milestone": "customer",
                    "kind": "percent_of_deal",
                    "percent": "12.5",
                },
                {
                    "id": "f",
                    "referrer_type": "customer",
                    "milestone": "lead",
                    "kind": "flat",
                    "amount": "10",
                },
            ]
        }
    )
    assert [r.kind for r in program.rewards] == [RewardKind.PERCENT_OF_DEAL, RewardKind.FLAT]


# --- wrong values: the message names the field path and the reason -----------------------


def test_a_percent_above_100_is_refused_naming_the_rule_index_and_field() -> None:
    message = refused(lambda raw: raw["rewards"][1].__setitem__("percent", 150))
    assert "rules.yaml" in message
    assert "rewards.1.percent" in message
    assert "less than or equal to 100" in message
    assert "150" in message


def test_a_zero_percent_is_refused_naming_the_field() -> None:
    message = refused(lambda raw: raw["rewards"][1].__setitem__("percent", 0))
    assert "rewards.1.percent" in message
    assert "greater than 0" in message


def test_a_threshold_with_more_decimals_than_the_currency_is_refused() -> None:
    message = refused(lambda raw: raw["approvals"].__setitem__("auto_payout_threshold", "500.001"))
    assert "approvals.auto_payout_threshold" in message
    assert "more decimals" in message
    assert "EUR" in message


def test_a_reward_cap_with_too_many_decimals_for_yen_is_refused_naming_the_cap() -> None:
    def to_yen(raw: dict[str, Any]) -> None:
        raw["currency"] = "JPY"
        raw["rewards"][1]["cap"] = "10000.50"

    message = refused(to_yen)
    assert "rewards.1.cap" in message
    assert "more decimals" in message


def test_an_amount_written_as_a_number_instead_of_text_is_refused() -> None:
    message = refused(lambda raw: raw["rewards"][0].__setitem__("amount", 200.0))
    assert "rewards.0.amount" in message
    assert "string" in message


def test_an_amount_that_is_not_a_plain_decimal_is_refused() -> None:
    message = refused(lambda raw: raw["rewards"][0].__setitem__("amount", "-200"))
    assert "rewards.0.amount" in message
    assert "pattern" in message


def test_an_unknown_currency_is_refused_listing_the_supported_ones() -> None:
    message = refused(lambda raw: raw.__setitem__("currency", "XYZ"))
    assert "currency" in message
    assert "unsupported currency" in message
    assert "'XYZ'" in message
    assert "EUR" in message


def test_a_flat_rule_without_an_amount_is_refused_naming_the_rule() -> None:
    message = refused(lambda raw: raw["rewards"][0].pop("amount"))
    assert "rewards.0" in message
    assert "flat rule needs 'amount'" in message


def test_a_percent_rule_without_a_percent_is_refused_naming_the_rule() -> None:
    message = refused(lambda raw: raw["rewards"][1].pop("percent"))
    assert "rewards.1" in message
    assert "needs 'percent'" in message


def test_duplicate_rule_ids_are_refused_naming_the_id() -> None:
    def duplicate(raw: dict[str, Any]) -> None:
        raw["rewards"][2]["id"] = raw["rewards"][0]["id"]

    message = refused(duplicate)
    assert "duplicate rule id" in message
    assert shipped_raw()["rewards"][0]["id"] in message


def test_a_second_approver_threshold_below_the_first_is_refused() -> None:
    message = refused(
        lambda raw: raw["approvals"].__setitem__("second_approver_threshold", "100.00")
    )
    assert "approvals.second_approver_threshold" in message
    assert "must not be below auto_payout_threshold" in message


def test_equal_approval_thresholds_are_allowed() -> None:
    raw = shipped_raw()
    raw["approvals"]["second_approver_threshold"] = raw["approvals"]["auto_payout_threshold"]
    program = parse_program(raw)
    assert program.second_approver_threshold == program.auto_payout_threshold


def test_a_priority_list_missing_a_moment_is_refused() -> None:
    message = refused(lambda raw: raw["moments"]["priority"].remove("usage_milestone"))
    assert "moments.priority" in message
    assert "exactly once" in message


def test_a_priority_list_naming_a_moment_twice_is_refused() -> None:
    message = refused(lambda raw: raw["moments"]["priority"].append("renewal"))
    assert "moments.priority" in message
    assert "exactly once" in message


def test_an_nps_min_score_that_would_ask_passives_is_refused() -> None:
    message = refused(lambda raw: raw["moments"]["nps_promoter"].__setitem__("min_score", 7))
    assert "moments.nps_promoter.min_score" in message


def test_an_unknown_top_level_key_is_refused_by_name() -> None:
    message = refused(lambda raw: raw.__setitem__("colour", "blue"))
    assert "colour" in message
    assert "Extra inputs are not permitted" in message


def test_an_unknown_nested_key_is_refused_with_its_path() -> None:
    message = refused(lambda raw: raw["approvals"].__setitem__("auto_pay", True))
    assert "approvals.auto_pay" in message


def test_an_unknown_attribution_model_is_refused() -> None:
    message = refused(lambda raw: raw["attribution"].__setitem__("model", "random"))
    assert "attribution.model" in message


def test_every_wrong_field_is_reported_not_just_the_first() -> None:
    def two_errors(raw: dict[str, Any]) -> None:
        raw["holding_days"] = -1
        raw["rewards"][1]["percent"] = 150

    message = refused(two_errors)
    assert "holding_days" in message
    assert "rewards.1.percent" in message


@pytest.mark.parametrize("raw", [["a", "b"], "just text", 42], ids=["list", "str", "int"])
def test_rules_that_are_not_a_mapping_are_refused(raw: object) -> None:
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        parse_program(raw, "rules.yaml")


def test_a_rules_file_that_is_a_list_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- one\n- two\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="top level must be a mapping") as info:
        load_program(path)
    assert str(path) in str(info.value)


def test_a_rules_file_that_is_not_yaml_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\ncurrency: EUR\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        load_program(path)
    assert str(path) in str(info.value)


def test_a_missing_rules_file_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"
    with pytest.raises(ConfigError, match="cannot read the program rules") as info:
        load_program(path)
    assert str(path) in str(info.value)


def test_a_wrong_field_in_a_file_is_reported_with_the_file_and_the_path(tmp_path: Path) -> None:
    raw = shipped_raw()
    raw["rewards"][1]["percent"] = 101
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_program(path)
    assert str(path) in str(info.value)
    assert "rewards.1.percent" in str(info.value)


# --- settings --------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No REFERRALS_* variables from the machine and no .env file in the working dir."""
    for name in list(os.environ):
        if name.startswith("REFERRALS_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_settings_refuse_an_unsupported_database_url_naming_the_variable(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("REFERRALS_DATABASE_URL", "mysql://user:hunter2@db/referrals")
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "REFERRALS_DATABASE_URL" in message
    assert "sqlite" in message
    assert "postgresql" in message
    # the refused value (which may hold a password) is not echoed back
    assert "hunter2" not in message


def test_settings_accept_a_postgres_database_url(clean_env: pytest.MonkeyPatch) -> None:
    url = "postgresql+psycopg://referrals@db.internal:5432/referrals"
    clean_env.setenv("REFERRALS_DATABASE_URL", url)
    assert load_settings().database_url == url


def test_settings_refuse_a_bad_number_naming_the_variable(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("REFERRALS_BATCH_SIZE", "0")
    with pytest.raises(ConfigError, match="REFERRALS_BATCH_SIZE"):
        load_settings()


def test_api_keys_are_secret_and_never_shown_in_the_settings_text(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("REFERRALS_STRIPE_API_KEY", "sk_test_verysecret123")
    clean_env.setenv("REFERRALS_STRIPE_WEBHOOK_SECRET", "whsec_verysecret456")
    settings = load_settings(sendgrid_api_key="SG.verysecret789")
    for secret in ("sk_test_verysecret123", "whsec_verysecret456", "SG.verysecret789"):
        assert secret not in repr(settings)
        assert secret not in str(settings)
    assert settings.stripe_api_key is not None
    assert settings.stripe_api_key.get_secret_value() == "sk_test_verysecret123"
    assert settings.stripe_webhook_secret is not None
    assert settings.stripe_webhook_secret.get_secret_value() == "whsec_verysecret456"
    assert settings.sendgrid_api_key is not None
    assert settings.sendgrid_api_key.get_secret_value() == "SG.verysecret789"
    assert (settings.email_backend, settings.payout_backend) == ("sendgrid", "stripe")


def test_without_keys_email_goes_to_the_outbox_and_payouts_to_the_ledger(
    clean_env: pytest.MonkeyPatch,
) -> None:
    settings = load_settings()
    assert settings.email_backend == "outbox"
    assert settings.payout_backend == "ledger_only"


# --- the detractor window ------------------------------------------------------------------


def test_the_shipped_rules_keep_detractors_out_for_90_days() -> None:
    assert load_program(SHIPPED).eligibility.detractor_window_days == 90


def test_the_detractor_window_defaults_to_90_days_when_the_file_leaves_it_out() -> None:
    assert (
        parse_program({"eligibility": {"cooldown_days": 30}}).eligibility.detractor_window_days
        == 90
    )


def test_a_detractor_window_read_from_the_file_is_used() -> None:
    program = parse_program({"eligibility": {"detractor_window_days": 180}})
    assert program.eligibility.detractor_window_days == 180


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (0, "greater than or equal to 1"),
        (-5, "greater than or equal to 1"),
        (731, "less than or equal to 730"),
        ("ninety", "valid integer"),
    ],
)
def test_a_detractor_window_out_of_range_or_not_a_number_is_refused_naming_the_field(
    value: object, reason: str
) -> None:
    message = refused(lambda raw: raw["eligibility"].__setitem__("detractor_window_days", value))
    assert "eligibility.detractor_window_days" in message
    assert reason in message
