"""The alert webhook against a real HTTP receiver on loopback: signed JSON, firing then resolved,
retries with backoff, a final refusal, an unreachable receiver that never holds up the sender."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import insert

from dockyard.config import Settings
from dockyard.monitoring.alerts import AlertEngine, check_alerting
from dockyard.monitoring.webhook import SIGNATURE_HEADER, Webhook, sign
from dockyard.registry.store import RegistryStore
from dockyard.registry.tables import drift_reports
from servers import free_port
from webhooks import webhook_receiver

SECRET = "s3cret-for-tests"
PAYLOAD = {"alert": "a", "state": "firing", "value": 1.0, "message": "m"}


def test_a_firing_and_its_resolution_arrive_signed(tmp_path: Path) -> None:
    store = RegistryStore.open(f"sqlite:///{tmp_path / 'dockyard.db'}")
    with webhook_receiver() as receiver:
        settings = Settings(
            alerts={"fraud-drift": {"kind": "drift", "model": "fraud"}},
            alert_webhook=receiver.url,
            alert_webhook_secret=SECRET,
        )
        webhook = Webhook(settings.alert_webhook, settings.alert_webhook_secret)
        webhook.start()
        engine = AlertEngine(check_alerting(settings), store, webhook)
        for drifted in (True, True, False):
            with store.engine.begin() as connection:
                connection.execute(
                    insert(drift_reports).values(
                        model="fraud", version=3, computed_at=datetime.now(UTC), window="24h",
                        rows=10, feature="amount", method="ks", score=0.7, p_value=1e-6,
                        drifted=drifted, details={},
                    )
                )  # fmt: skip
            engine.run_once()
        webhook.close()

    firing, resolved = receiver.deliveries
    assert all(delivery.signed_with(SECRET) for delivery in receiver.deliveries)
    assert not firing.signed_with("another secret")
    assert firing.headers["content-type"] == "application/json"
    assert firing.payload["state"] == "firing"
    assert firing.payload["alert"] == "fraud-drift"
    assert firing.payload["kind"] == "drift"
    assert firing.payload["model"] == "fraud"
    assert firing.payload["value"] == 1.0
    assert firing.payload["message"] == "drift in fraud v3: amount (ks 0.7, p=1e-06)"
    assert resolved.payload["state"] == "resolved"
    assert resolved.payload["id"] == firing.payload["id"]
    assert resolved.payload["fired_at"] == firing.payload["fired_at"]
    assert resolved.payload["resolved_at"] is not None
    assert resolved.payload["message"].startswith("no drift in fraud v3")
    assert (webhook.delivered, webhook.failed) == (2, 0)
    store.close()


def test_the_signature_is_the_hmac_sha256_of_the_exact_body() -> None:
    # printf '{"a":1}' | openssl dgst -sha256 -hmac key
    openssl = "88a67f24bbcdaed0e6c997404bb79a743baf44c6bab2f4c27328e3009d22e342"
    assert sign("key", b'{"a":1}') == f"sha256={openssl}"
    assert sign("key", b'{"a": 1}') != f"sha256={openssl}"


def test_a_failing_receiver_is_retried_with_backoff_until_it_takes_it() -> None:
    with webhook_receiver(statuses=[500, 503]) as receiver:
        webhook = Webhook(receiver.url, SECRET, attempts=4, backoff_s=0.05)
        started = time.monotonic()
        assert webhook.deliver(PAYLOAD)
        took = time.monotonic() - started
        webhook.close()

    assert receiver.attempts == 3
    assert len(receiver.deliveries) == 1
    assert receiver.deliveries[0].signed_with(SECRET)
    assert took >= 0.05 + 0.1  # the pauses doubled


def test_a_refusal_is_final_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with webhook_receiver(statuses=[400]) as receiver:
        webhook = Webhook(receiver.url, SECRET, attempts=4, backoff_s=0.01)
        assert not webhook.deliver(PAYLOAD)
        webhook.close()
    assert receiver.attempts == 1
    assert "could not deliver the firing notification of a: answered 400" in caplog.text


def test_an_unreachable_receiver_never_holds_up_the_sender() -> None:
    webhook = Webhook(f"http://127.0.0.1:{free_port()}/hook", attempts=3, backoff_s=0.05)
    webhook.start()
    started = time.monotonic()
    for _ in range(5):
        webhook.send(PAYLOAD)
    queued_in = time.monotonic() - started
    webhook.close(wait_s=10)

    assert queued_in < 0.05
    assert (webhook.delivered, webhook.failed) == (0, 5)


def test_without_a_secret_the_notification_is_unsigned() -> None:
    with webhook_receiver() as receiver:
        webhook = Webhook(receiver.url)
        assert webhook.deliver(PAYLOAD)
        webhook.close()
    assert SIGNATURE_HEADER.lower() not in receiver.deliveries[0].headers
