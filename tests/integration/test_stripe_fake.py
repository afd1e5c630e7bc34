"""The fake Stripe server's own behaviour, checked with plain HTTP calls.

The payout tests trust the fake to behave like Stripe; these tests pin down the parts
that matter for money: idempotency (replay, mismatch, concurrency, expiry, what is and
is not saved), faults, authentication and list paging.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from integrations.payments.stripe_stand_in import FakeStripe, decode_form

API_KEY = "sk_test_fake_4242"


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with FakeStripe(api_key=API_KEY, slow_seconds=0.5) as server:
        yield server


@pytest.fixture
def http() -> Iterator[requests.Session]:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {API_KEY}"
    yield session
    session.close()


@pytest.fixture
def account(fake: FakeStripe) -> str:
    return fake.add_account("acct_referrer1")


def transfer_params(account: str, amount: int = 2500, **extra: str) -> dict[str, Any]:
    return {
        "amount": str(amount),
        "currency": "eur",
        "destination": account,
        "transfer_group": "reward_r1",
        "metadata[reward_id]": "r1",
        "metadata[payout_id]": "p1",
        **extra,
    }


def post(
    http: requests.Session,
    fake: FakeStripe,
    path: str,
    data: dict[str, Any],
    key: str | None = None,
    timeout: float = 5,
) -> requests.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return http.post(f"{fake.url}{path}", data=data, headers=headers, timeout=timeout)


def error_of(response: requests.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    return error


# -- authentication ----------------------------------------------------------------------


def test_a_request_without_an_api_key_is_refused_with_401(fake: FakeStripe) -> None:
    with requests.Session() as anonymous:
        response = anonymous.get(f"{fake.url}/v1/transfers", timeout=5)

    assert response.status_code == 401
    assert "did not provide an API key" in error_of(response)["message"]


def test_a_wrong_api_key_is_refused_with_401_echoing_only_its_last_four_characters(
    fake: FakeStripe,
) -> None:
    wrong = "sk_test_not_the_right_one_9876"
    with requests.Session() as session:
        response = session.get(
            f"{fake.url}/v1/transfers", headers={"Authorization": f"Bearer {wrong}"}, timeout=5
        )

    message = error_of(response)["message"]
    assert response.status_code == 401
    assert wrong not in message
    assert message.startswith("Invalid API Key provided: sk_test_*")
    assert message.endswith("9876")


def test_basic_auth_with_the_key_as_user_is_accepted(fake: FakeStripe) -> None:
    with requests.Session() as session:
        response = session.get(f"{fake.url}/v1/transfers", auth=(API_KEY, ""), timeout=5)

    assert response.status_code == 200
    assert response.json()["object"] == "list"


# -- transfers ---------------------------------------------------------------------------


def test_a_transfer_is_created_shaped_like_stripes(
    fake: FakeStripe, http: requests.Session, account: str
) -> None:
    response = post(http, fake, "/v1/transfers", transfer_params(account), key="k-1")

    body = response.json()
    assert response.status_code == 200
    assert body["object"] == "transfer"
    assert body["id"].startswith("tr_")
    assert body["amount"] == 2500
    assert body["currency"] == "eur"
    assert body["destination"] == account
    assert body["transfer_group"] == "reward_r1"
    assert body["metadata"] == {"reward_id": "r1", "payout_id": "p1"}
    assert body["livemode"] is False
    assert body["reversals"]["object"] == "list"
    assert isinstance(body["created"], int)
    assert response.headers["Request-Id"].startswith("req_")
    assert fake.transfers == [body]


def test_an_unknown_parameter_is_refused_so_nothing_extra_can_slip_into_a_transfer(
    fake: FakeStripe, http: requests.Session, account: str
) -> None:
    response = post(http, fake, "/v1/transfers", transfer_params(account, email="a@b.example"))

    assert response.status_code == 400
    assert error_of(response)["code"] == "parameter_unknown"
    assert error_of(response)["param"] == "email"
    assert fake.transfers == []


def test_a_transfer_to_an_unknown_connected_account_is_resource_missing(
    fake: FakeStripe, http: requests.Session
) -> None:
    response = post(http, fake, "/v1/transfers", transfer_params("acct_nobody"), key="k-x")

    assert response.status_code == 400
    assert error_of(response)["code"] == "resource_missing"
    assert error_of(response)["param"] == "destination"


def test_getting_an_unknown_transfer_is_a_404_resource_missing(
    fake: FakeStripe, http: requests.Session
) -> None:
    response = http.get(f"{fake.url}/v1/transfers/tr_missing", timeout=5)

    assert response.status_code == 404
    assert error_of(response)["code"] == "resource_missing"


def test_an_unrecognized_url_is_a_404(fake: FakeStripe, http: requests.Session) -> None:
    response = http.get(f"{fake.url}/v1/payouts_of_dreams", timeout=5)

    assert response.status_code == 404
    assert "Unrecognized request URL" in error_of(response)["message"]


def test_transfers_are_listed_newest_first_by_group_with_has_more_paging(
    fake: FakeStripe, http: requests.Session, account: str
) -> None:
    ours = [
        post(http, fake, "/v1/transfers", transfer_params(account, amount=100 + i)).json()["id"]
        for i in range(5)
    ]
    post(http, fake, "/v1/transfers", transfer_params(account, transfer_group="reward_other"))

    seen: list[str] = []
    params: dict[str, Any] = {"transfer_group": "reward_r1", "limit": 2}
    pages = 0
    while True:
        page = http.get(f"{fake.url}/v1/transfers", params=params, timeout=5).json()
        pages += 1
        seen += [t["id"] for t in page["data"]]
        if not page["has_more"]:
            break
        params["starting_after"] = seen[-1]

    assert seen == list(reversed(ours))
    assert pages == 3
    before = http.get(
        f"{fake.url}/v1/transfers",
        params={"transfer_group": "reward_r1", "ending_before": ours[1], "limit": 2},
        timeout=5,
    ).json()
    assert [t["id"] for t in before["data"]] == [ours[3], ours[2]]
    assert before["has_more"] is True


def test_transfers_can_be_listed_by_destination(
    fake: FakeStripe, http: requests.Session, account: str
) -> None:
    other = fake.add_account()
    post(http, fake, "/v1/transfers", transfer_params(account))
    mine = post(http, fake, "/v1/transfers", transfer_params(other)).json()["id"]

    page = http.get(f"{fake.url}/v1/transfers", params={"destination": other}, timeout=5).json()

    assert [t["id"] for t in page["data"]] == [mine]


def test_a_reversal_cannot_exceed_what_remains_of_the_transfer(
    fake: FakeStripe, http: requests.Session, account: str
) -> None:
    transfer = post(http, fake, "/v1/transfers", transfer_params(account, amount=1000)).json()
    path = f"/v1/transfers/{transfer['id']}/reversals"

    first = post(http, fake, path, {"amount": "600", "metadata[reason]": "clawback"})
    too_much = post(http, fake, path, {"amount": "500"})
    rest = post(http, fake, path, {})
    nothing_left = post(http, fake, path, {})

    assert first.status_code == 200
    assert first.json()["object"] == "transfer_reversal"
    assert too_much.status_code == 400
    assert "greater than the amount remaining" in error_of(too_much)["message"]
    assert rest.json()["amount"] == 400
    assert nothing_left.status_code == 400
    after = http.get(f"{fake.url}/v1/transfers/{transfer['id']}", timeout=5).json()
    assert after["amount_reversed"] == 1000
    assert after["reversed"] is True
    listed = http.get(f"{fake.url}{path}", timeout=5).json()
    assert [r["amount"] for r in listed["data"]] == [400, 600]


def test_a_transfer_beyond_the_platform_balance_is_balance_insufficient() -> None:
    with (
        FakeStripe(api_key=API_KEY, available_balance={"eur": 1000}) as fake,
        requests.Session() as http,
    ):
        http.headers["Authorization"] = f"Bearer {API_KEY}"
        account = fake.add_account()

        ok = post(http, fake, "/v1/transfers", transfer_params(account, amount=800))
        short = post(http, fake, "/v1/transfers", transfer_params(account, amount=300))

        assert ok.status_code == 200
        assert short.status_code == 400
        assert error_of(short)["code"] == "balance_insufficient"
        assert fake.available("eur") == 200


# -- customer balance, coupons, promotion codes, events ------------------------------------


def test_a_customer_balance_credit_is_a_negative_amount_that_lowers_the_balance(
    fake: FakeStripe, http: requests.Session
) -> None:
    customer = fake.add_customer("cus_referrer")
    path = f"/v1/customers/{customer}/balance_transactions"

    credit = post(http, fake, path, {"amount": "-1500", "currency": "eur"}, key="c-1").json()
    post(http, fake, path, {"amount": "-500", "currency": "eur"})
    other_currency = post(http, fake, path, {"amount": "-500", "currency": "usd"})

    assert credit["object"] == "customer_balance_transaction"
    assert credit["amount"] == -1500
    assert credit["ending_balance"] == -1500
    assert fake.customer_balance(customer) == -2000
    assert other_currency.status_code == 400
    page = http.get(f"{fake.url}{path}", params={"limit": 1}, timeout=5).json()
    assert page["has_more"] is True
    assert page["data"][0]["amount"] == -500


def test_crediting_an_unknown_customer_is_a_404_resource_missing(
    fake: FakeStripe, http: requests.Session
) -> None:
    response = post(
        http,
        fake,
        "/v1/customers/cus_nobody/balance_transactions",
        {"amount": "-1", "currency": "eur"},
    )

    assert response.status_code == 404
    assert error_of(response)["code"] == "resource_missing"


def test_a_coupon_and_its_promotion_code_can_be_created(
    fake: FakeStripe, http: requests.Session
) -> None:
    coupon = post(
        http, fake, "/v1/coupons", {"percent_off": "20", "duration": "once", "id": "FRIEND20"}
    ).json()
    promo = post(
        http,
        fake,
        "/v1/promotion_codes",
        {"promotion[type]": "coupon", "promotion[coupon]": "FRIEND20", "code": "ANNA20"},
    ).json()
    duplicate = post(
        http,
        fake,
        "/v1/promotion_codes",
        {"promotion[type]": "coupon", "promotion[coupon]": "FRIEND20", "code": "anna20"},
    )
    bad_coupon = post(http, fake, "/v1/coupons", {"duration": "once"})

    assert coupon["object"] == "coupon"
    assert coupon["percent_off"] == 20
    assert promo["object"] == "promotion_code"
    assert promo["code"] == "ANNA20"
    assert promo["promotion"] == {"coupon": "FRIEND20", "type": "coupon"}
    assert duplicate.status_code == 400
    assert bad_coupon.status_code == 400


def test_events_are_listed_by_created_gte_and_type_with_paging(
    fake: FakeStripe, http: requests.Session
) -> None:
    fake.add_event("customer.updated", {"id": "cus_1"})
    fake.advance(minutes=10)
    since = int(fake.now().timestamp())
    wanted = [fake.add_event("payout.paid", {"id": f"po_{i}"})["id"] for i in range(3)]
    fake.add_event("customer.updated", {"id": "cus_2"})

    first_page: dict[str, str | int] = {"created[gte]": since, "type": "payout.paid", "limit": 2}
    first = http.get(f"{fake.url}/v1/events", params=first_page, timeout=5).json()
    next_page: dict[str, str | int] = {
        "created[gte]": since,
        "type": "payout.paid",
        "starting_after": first["data"][-1]["id"],
    }
    second = http.get(f"{fake.url}/v1/events", params=next_page, timeout=5).json()

    assert first["has_more"] is True
    assert [e["id"] for e in first["data"] + second["data"]] == list(reversed(wanted))
    assert second["has_more"] is False
    assert first["data"][0]["data"]["object"] == {"id": "po_2"}


# -- charges and payment intents -----------------------------------------------------------


def test_a_charge_is_read_back_with_its_cards_details_and_fingerprint(
    fake: FakeStripe, http: requests.Session
) -> None:
    fake.add_charge("ch_card1", amount=4990, customer="cus_1", fingerprint="fpAbc123")

    charge = http.get(f"{fake.url}/v1/charges/ch_card1", timeout=5).json()

    assert (charge["object"], charge["status"], charge["paid"]) == ("charge", "succeeded", True)
    assert (charge["amount"], charge["currency"], charge["customer"]) == (4990, "eur", "cus_1")
    details = charge["payment_method_details"]
    assert details["type"] == "card"
    assert (details["card"]["fingerprint"], details["card"]["last4"]) == ("fpAbc123", "4242")
    assert charge["payment_intent"] is None


def test_a_sepa_debit_charge_has_no_card(fake: FakeStripe, http: requests.Session) -> None:
    fake.add_charge("ch_sepa1", amount=4990, method="sepa_debit")

    charge = http.get(f"{fake.url}/v1/charges/ch_sepa1", timeout=5).json()

    assert charge["payment_method_details"]["type"] == "sepa_debit"
    assert "card" not in charge["payment_method_details"]


def test_a_payment_intent_names_its_latest_charge_and_expands_it_when_asked(
    fake: FakeStripe, http: requests.Session
) -> None:
    fake.add_payment_intent("pi_1", amount=4990)
    unpaid = http.get(f"{fake.url}/v1/payment_intents/pi_1", timeout=5).json()
    fake.add_charge("ch_1", amount=4990, payment_intent="pi_1", fingerprint="fpPI")

    plain = http.get(f"{fake.url}/v1/payment_intents/pi_1", timeout=5).json()
    expanded = http.get(
        f"{fake.url}/v1/payment_intents/pi_1", params={"expand[0]": "latest_charge"}, timeout=5
    ).json()
    charge = http.get(
        f"{fake.url}/v1/charges/ch_1", params={"expand[]": "payment_intent"}, timeout=5
    ).json()

    assert (unpaid["status"], unpaid["latest_charge"]) == ("requires_payment_method", None)
    assert (plain["status"], plain["latest_charge"]) == ("succeeded", "ch_1")
    assert expanded["latest_charge"]["payment_method_details"]["card"]["fingerprint"] == "fpPI"
    assert charge["payment_intent"]["id"] == "pi_1"


def test_an_expansion_the_object_does_not_have_is_refused(
    fake: FakeStripe, http: requests.Session
) -> None:
    fake.add_charge("ch_1", amount=100)

    response = http.get(
        f"{fake.url}/v1/charges/ch_1", params={"expand[]": "customer.sources"}, timeout=5
    )

    assert response.status_code == 400
    assert error_of(response)["message"] == "This property cannot be expanded (customer.sources)."


@pytest.mark.parametrize("path", ["/v1/charges/ch_missing", "/v1/payment_intents/pi_missing"])
def test_reading_an_unknown_charge_or_payment_intent_is_a_404_resource_missing(
    fake: FakeStripe, http: requests.Session, path: str
) -> None:
    response = http.get(f"{fake.url}{path}", timeout=5)

    assert response.status_code == 404
    assert error_of(response)["code"] == "resource_missing"


def test_creating_a_transfer_emits_a_transfer_created_event(
    fake: FakeStripe, http: requests.Session, account: str
) -> None:
    transfer = post(http, fake, "/v1/transfers", transfer_params(account)).json()

    page = http.get(f"{fake.url}/v1/events", params={"type": "transfer.*"}, timeout=5).json()

    assert [e["type"] for e in page["data"]] == ["transfer.created"]
    assert page["data"][0]["data"]["object"]["id"] == transfer["id"]


# -- idempotency -------------------------------------------------------------------------


def test_the_same_key_and_params_replay_the_saved_response(
    fake: FakeStripe, http: requests.Session, account: str
) -> None:
    first = post(http, fake, "/v1/transfers", transfer_params(account), key="k-replay")
    again = post(http, fake, "/v1/transfers", transfer_params(account), key="k-replay")

    assert again.status_code == first.status_code == 200
    assert again.content == first.content
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Original-Request"] == first.headers["Request-Id"]
    assert "Idempotent-Replayed" not in first.headers
    assert len(fake.transfers) == 1


def test_the_same_key_with_different_params_is_an_idempotency_error(
    fake: FakeStripe, http: requests.Session, account: str
) -> None:
    post(http, fake, "/v1/transfers", transfer_params(account, amount=2500), key="k-mismatch")
    changed = post(
        http, fake, "/v1/transfers", transfer_params(account, amount=2600), key="k-mismatch"
    )

    assert changed.status_code == 400
    assert error_of(changed)["type"] == "idempotency_error"
    assert [t["amount"] for t in fake.transfers] == [2500]


def test_the_same_key_on_another_endpoint_is_an_idempotency_error(
    fake: FakeStripe, http: requests.Session, account: str
) -> None:
    customer = fake.add_customer()
    post(http, fake, "/v1/transfers", transfer_params(account), key="k-shared")
    other = post(
        http,
        fake,
        f"/v1/customers/{customer}/balance_transactions",
        {"amount": "-100", "currency": "eur"},
        key="k-shared",
    )

    assert other.status_code == 400
    assert error_of(other)["type"] == "idempotency_error"
    assert fake.balance_transactions == []


def test_a_second_request_while_the_first_with_its_key_is_executing_gets_409(
    fake: FakeStripe, http: requests.Session, account: str
) -> None:
    fake.script("POST /v1/transfers", ["timeout"])  # the first request runs slowly
    # Slow enough that the second request surely lands while it runs, on a busy machine too.
    fake.slow_seconds = 2.0
    outcome: dict[str, requests.Response] = {}

    def first_request() -> None:
        with requests.Session() as own:
            own.headers["Authorization"] = f"Bearer {API_KEY}"
            outcome["first"] = post(own, fake, "/v1/transfers", transfer_params(account), "k-busy")

    worker = threading.Thread(target=first_request)
    worker.start()
    deadline = time.monotonic() + 5
    while "k-busy" not in fake.in_flight_keys() and time.monotonic() < deadline:
        time.sleep(0.01)
    concurrent = post(http, fake, "/v1/transfers", transfer_params(account), key="k-busy")
    worker.join()
    after = post(http, fake, "/v1/transfers", transfer_params(account), key="k-busy")

    assert concurrent.status_code == 409
    assert error_of(concurrent)["type"] == "idempotency_error"
    assert error_of(concurrent)["code"] == "idempotency_key_in_use"
    assert outcome["first"].status_code == 200
    assert after.json()["id"] == outcome["first"].json()["id"]
    assert after.headers["Idempotent-Replayed"] == "true"
    assert len(fake.transfers) == 1


def test_a_key_is_kept_for_24_hours_then_forgotten_so_a_replay_creates_anew(
    fake: FakeStripe, http: requests.Session, account: str
) -> None:
    first = post(http, fake, "/v1/transfers", transfer_params(account), key="k-ttl").json()
    fake.advance(hours=23)
    within = post(http, fake, "/v1/transfers", transfer_params(account), key="k-ttl").json()
    fake.advance(hours=2)
    after = post(http, fake, "/v1/transfers", transfer_params(account), key="k-ttl").json()

    assert within["id"] == first["id"]
    assert after["id"] != first["id"]
    assert len(fake.transfers) == 2


def test_a_request_refused_by_parameter_validation_is_not_saved_under_its_key(
    fake: FakeStripe, http: requests.Session, account: str
) -> None:
    invalid = post(http, fake, "/v1/transfers", {"currency": "eur", "destination": account}, "k-v")
    valid = post(http, fake, "/v1/transfers", transfer_params(account), key="k-v")

    assert invalid.status_code == 400
    assert error_of(invalid)["code"] == "parameter_missing"
    assert valid.status_code == 200
    assert "Idempotent-Replayed" not in valid.headers


def test_a_failure_of_the_executing_endpoint_is_saved_and_replayed(
    fake: FakeStripe, http: requests.Session
) -> None:
    params = transfer_params("acct_later")
    refused = post(http, fake, "/v1/transfers", params, key="k-refused")
    fake.add_account("acct_later")
    replayed = post(http, fake, "/v1/transfers", params, key="k-refused")
    fresh_key = post(http, fake, "/v1/transfers", params, key="k-refused:2")

    assert refused.status_code == replayed.status_code == 400
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert fresh_key.status_code == 200


def test_an_idempotency_key_longer_than_255_characters_is_refused(
    fake: FakeStripe, http: requests.Session, account: str
) -> None:
    response = post(http, fake, "/v1/transfers", transfer_params(account), key="k" * 256)

    assert response.status_code == 400
    assert fake.transfers == []


# -- faults and rate limits --------------------------------------------------------------


def test_a_scripted_500_is_not_saved_so_a_retry_with_the_key_executes(
    fake: FakeStripe, http: requests.Session, account: str
) -> None:
    fake.script("POST /v1/transfers", [500])

    failed = post(http, fake, "/v1/transfers", transfer_params(account), key="k-500")
    retried = post(http, fake, "/v1/transfers", transfer_params(account), key="k-500")

    assert failed.status_code == 500
    assert error_of(failed)["type"] == "api_error"
    assert retried.status_code == 200
    assert "Idempotent-Replayed" not in retried.headers
    assert len(fake.transfers) == 1


def test_a_saved_500_is_replayed_with_stripe_should_retry_false(
    fake: FakeStripe, http: requests.Session, account: str
) -> None:
    fake.script("POST /v1/transfers", ["500_saved"])

    failed = post(http, fake, "/v1/transfers", transfer_params(account), key="k-s500")
    replayed = post(http, fake, "/v1/transfers", transfer_params(account), key="k-s500")

    assert failed.status_code == replayed.status_code == 500
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert replayed.headers["Stripe-Should-Retry"] == "false"
    assert fake.transfers == []


def test_commit_then_500_creates_the_transfer_and_the_retry_replays_it(
    fake: FakeStripe, http: requests.Session, account: str
) -> None:
    fake.script("POST /v1/transfers", ["commit_then_500"])

    lost = post(http, fake, "/v1/transfers", transfer_params(account), key="k-c500")
    retried = post(http, fake, "/v1/transfers", transfer_params(account), key="k-c500")

    assert lost.status_code == 500
    assert retried.status_code == 200
    assert retried.headers["Idempotent-Replayed"] == "true"
    assert [t["id"] for t in fake.transfers] == [retried.json()["id"]]


def test_commit_then_drop_closes_the_connection_after_creating_the_transfer(
    fake: FakeStripe, http: requests.Session, account: str
) -> None:
    fake.script("POST /v1/transfers", ["commit_then_drop"])

    with pytest.raises(requests.ConnectionError):
        post(http, fake, "/v1/transfers", transfer_params(account), key="k-drop")
    retried = post(http, fake, "/v1/transfers", transfer_params(account), key="k-drop")

    assert retried.headers["Idempotent-Replayed"] == "true"
    assert [t["id"] for t in fake.transfers] == [retried.json()["id"]]
    assert [r.status for r in fake.requests] == [0, 200]


def test_a_timeout_fault_outlasts_the_client_but_still_creates_the_transfer(
    fake: FakeStripe, http: requests.Session, account: str
) -> None:
    fake.script("POST /v1/transfers", ["timeout"])

    with pytest.raises(requests.Timeout):
        post(http, fake, "/v1/transfers", transfer_params(account), key="k-slow", timeout=0.1)
    deadline = time.monotonic() + 5
    while fake.in_flight_keys() and time.monotonic() < deadline:
        time.sleep(0.01)

    assert len(fake.transfers) == 1


def test_faults_are_consumed_in_order_by_matching_requests_only(
    fake: FakeStripe, http: requests.Session, account: str
) -> None:
    customer = fake.add_customer()
    fake.script("POST /v1/transfers", [429, "lock_timeout", 409, "ok", 500])

    credit = post(
        http,
        fake,
        f"/v1/customers/{customer}/balance_transactions",
        {"amount": "-100", "currency": "eur"},
    )
    statuses = [post(http, fake, "/v1/transfers", transfer_params(account)) for _ in range(5)]

    assert credit.status_code == 200
    assert [r.status_code for r in statuses] == [429, 429, 409, 200, 500]
    assert statuses[0].headers["Retry-After"] == "1"
    assert error_of(statuses[0])["code"] == "rate_limit"
    assert statuses[1].headers["Stripe-Should-Retry"] == "true"
    assert error_of(statuses[1])["code"] == "lock_timeout"
    assert fake.count("POST /v1/transfers") == 5
    assert fake.count("POST /v1/transfers", status=200) == 1


def test_an_unknown_fault_name_is_refused_when_scripted(fake: FakeStripe) -> None:
    with pytest.raises(ValueError, match="unknown faults"):
        fake.script("POST /v1/transfers", ["explode"])


def test_the_rate_limiter_answers_429_above_the_configured_rate() -> None:
    with (
        FakeStripe(api_key=API_KEY, rate_limit_per_second=3) as fake,
        requests.Session() as http,
    ):
        http.headers["Authorization"] = f"Bearer {API_KEY}"
        statuses = [http.get(f"{fake.url}/v1/transfers", timeout=5).status_code for _ in range(5)]

    assert statuses[:3] == [200, 200, 200]
    assert 429 in statuses[3:]


def test_the_endpoint_limiter_answers_429_per_endpoint_while_others_still_pass() -> None:
    with (
        FakeStripe(api_key=API_KEY, endpoint_rate_limit_per_second=3) as fake,
        requests.Session() as http,
    ):
        http.headers["Authorization"] = f"Bearer {API_KEY}"
        account = fake.add_account()
        lists = [http.get(f"{fake.url}/v1/transfers", timeout=5).status_code for _ in range(4)]
        # Another endpoint (and another id of one endpoint) has its own window.
        balances = [
            http.get(f"{fake.url}/v1/customers/{c}/balance_transactions", timeout=5).status_code
            for c in (fake.add_customer(), fake.add_customer(), fake.add_customer())
        ]
        created = post(http, fake, "/v1/transfers", transfer_params(account), key="k-endpoint")

    assert lists[:3] == [200, 200, 200]
    assert lists[3] == 429
    assert balances == [200, 200, 200]
    assert created.status_code == 200


def test_the_request_log_records_method_path_key_and_status(
    fake: FakeStripe, http: requests.Session, account: str
) -> None:
    post(http, fake, "/v1/transfers", transfer_params(account), key="k-log")
    post(http, fake, "/v1/transfers", transfer_params(account), key="k-log")

    first, second = fake.requests

    assert (first.method, first.path, first.idempotency_key, first.status) == (
        "POST",
        "/v1/transfers",
        "k-log",
        200,
    )
    assert first.replayed is False
    assert second.replayed is True


def test_stripe_form_encoding_decodes_nested_objects_and_arrays() -> None:
    decoded = decode_form(
        [
            ("metadata[reward_id]", "r1"),
            ("expand[0]", "destination"),
            ("expand[1]", "balance_transaction"),
            ("created[gte]", "10"),
            ("types[]", "a"),
            ("types[]", "b"),
        ]
    )

    assert decoded == {
        "metadata": {"reward_id": "r1"},
        "expand": ["destination", "balance_transaction"],
        "created": {"gte": "10"},
        "types": ["a", "b"],
    }


def test_stop_returns_promptly_while_a_slow_request_is_executing() -> None:
    fake = FakeStripe(api_key=API_KEY, slow_seconds=30).start()
    account = fake.add_account()
    fake.script("POST /v1/transfers", ["timeout"])
    with requests.Session() as http:
        http.headers["Authorization"] = f"Bearer {API_KEY}"
        with pytest.raises(requests.Timeout):
            post(http, fake, "/v1/transfers", transfer_params(account), key="k", timeout=0.1)
        started = time.monotonic()
        fake.stop()

    assert time.monotonic() - started < 5
