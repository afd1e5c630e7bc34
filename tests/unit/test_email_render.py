"""Emails rendered from skeletons read exactly as Jinja renders them, template by template."""

from __future__ import annotations

import random
from typing import Any

import pytest
from jinja2 import UndefinedError, meta

from config.program import load_program
from config.settings import PROJECT_ROOT
from domain.models import Ask, MomentType, ReferrerType
from integrations.email import render as rendering
from integrations.email.render import render, render_by_jinja, template_names
from tasks.asks import compose_ask, compose_notice
from tests.conftest import contact

# Values that probe what a skeleton could get wrong: the ones the templates compare or
# test (``yes``, the rails, ``NPS 10``, the empty string), spaces at the ends (the body
# is stripped), Jinja syntax and markup in a value, other scripts, line breaks.
_POOL = (
    "yes",
    "no",
    "stripe_balance",
    "stripe_transfer",
    "ledger_only",
    "",
    "NPS 10",
    "NPS 9",
    "  padded value  ",
    "{{ first_name }} & <b>{% raw %}",
    "Zoë Ørsted-Łukasiewicz 日本",
    "two\nlines",
    "https://r.example/x?y=1&z=2",
    "EUR 50.00",
    "100% %s %(x)s %%",
)


def _names(template: str) -> set[str]:
    """Every variable ``template`` (its subject, body and the base it extends) reads."""
    env = rendering._env()
    names: set[str] = set()
    pending = [f"{template}.txt.j2"]
    while pending:
        source, _, _ = env.loader.get_source(env, pending.pop())  # type: ignore[union-attr]
        tree = env.parse(source)
        names |= meta.find_undeclared_variables(tree)
        pending += [t for t in meta.find_referenced_templates(tree) if t]
        subject = rendering._SUBJECT.match(source)
        if subject:
            names |= meta.find_undeclared_variables(env.parse(subject.group(1)))
    return names


def _outcome(fn: Any, template: str, data: dict[str, str]) -> Any:
    try:
        return fn(template, data)
    except UndefinedError as exc:
        return ("undefined", str(exc))


@pytest.mark.parametrize("template", template_names())
def test_every_template_renders_the_same_text_as_jinja_for_varied_values(template: str) -> None:
    rng = random.Random(template)
    names = sorted(_names(template))
    assert names, "each template reads some values"
    for _ in range(150):
        # Most values given, some left out: optional ones (``is defined``, ``default``)
        # change the text, and a missing required one must fail the same way.
        data = {name: rng.choice(_POOL) for name in names if rng.random() < 0.9}
        assert _outcome(render, template, data) == _outcome(render_by_jinja, template, data)
    # Rendering twice with the same values (a skeleton now cached) gives the same text.
    full = {name: f"value of {name}" for name in names}
    assert render(template, full) == render(template, full) == render_by_jinja(template, full)


@pytest.mark.parametrize("moment", list(MomentType))
@pytest.mark.parametrize("referrer_type", list(ReferrerType))
@pytest.mark.parametrize("with_page", [False, True])
def test_every_ask_reads_as_jinja_renders_it_for_each_moment_and_referrer(
    moment: MomentType, referrer_type: ReferrerType, with_page: bool
) -> None:
    program = load_program(PROJECT_ROOT / "config" / "program.yaml")
    details = {
        MomentType.NPS_PROMOTER: ("NPS 9", "NPS 10"),
        MomentType.DEAL_WON: ("closed a deal",),
        MomentType.RENEWAL: ("renewed",),
        MomentType.SUPPORT_RESOLVED: ("CSAT 5",),
        MomentType.USAGE_MILESTONE: ("reached api_live",),
    }[moment]
    for i, detail in enumerate(details * 3):
        person = contact(f"C{i}", kind=referrer_type)
        ask = Ask(f"ask-{i}", f"m-{i}", person.contact_id, f"CODE{i}", moment)
        page_link = (lambda c: f"https://p.example/{c}") if with_page else None
        message = compose_ask(ask, person, detail, program, page_link)
        values = {k: v for k, v in message.data.items() if k not in ("subject", "text")}
        assert (message.subject, message.data["text"]) == render_by_jinja(message.template, values)


@pytest.mark.parametrize(
    "kind",
    [t.removeprefix("notice_") for t in template_names() if t.startswith("notice_")],
)
def test_every_notice_reads_as_jinja_renders_it(kind: str) -> None:
    program = load_program(PROJECT_ROOT / "config" / "program.yaml")
    data = {
        "amount": "EUR 50.00",
        "milestone": "customer",
        "payable_on": "2026-12-01",
        "reason": "duplicate referral",
        "cause": "the customer left",
        "after_payout": "yes",
        "rail": "stripe_transfer",
        "reward_line": "You earn EUR 50.",
    }
    for code, link, setup in ((None, None, False), ("CODE1", "https://p.example/C1", True)):
        page_link = (lambda c, link=link: f"{link}/{c}") if link else None
        message = compose_notice(
            "n-1", kind, contact("C1"), dict(data), program, code, page_link, setup
        )
        values = {k: v for k, v in message.data.items() if k not in ("subject", "text")}
        assert (message.subject, message.data["text"]) == render_by_jinja(message.template, values)


def test_values_holding_the_skeleton_marker_read_as_jinja_renders_them() -> None:
    data = {name: "x" for name in _names("ask_nps_promoter")}
    data["first_name"] = "Ada\x000\x00"
    assert render("ask_nps_promoter", data) == render_by_jinja("ask_nps_promoter", data)
    # moment_detail goes through a filter, so its value is rendered into the skeleton.
    data["moment_detail"] = "NPS \x001\x00"
    assert render("ask_nps_promoter", data) == render_by_jinja("ask_nps_promoter", data)


def test_values_that_are_not_text_print_as_jinja_prints_them() -> None:
    data: dict[str, Any] = {name: "x" for name in _names("notice_reward_paid")}
    data.update(amount=50, first_name=None, rail=("stripe", "balance"), program_name=1.5)
    assert render("notice_reward_paid", data) == render_by_jinja("notice_reward_paid", data)
    data["rail"] = ["unhashable"]
    assert render("notice_reward_paid", data) == render_by_jinja("notice_reward_paid", data)


def test_an_unknown_template_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        render("no_such_template", {})
