"""Notifications: a JSON post to the configured webhook; a dead webhook never fails the caller."""

from railyard.notify import notify
from railyard.settings import Settings


def test_posts_a_short_json_message(webhook):
    notify(Settings(), "promoted", "recmodel version 3 is in production", version=3, actor="alice")
    assert webhook == [
        {
            "event": "promoted",
            "model": "recmodel",
            "message": "recmodel version 3 is in production",
            "version": 3,
            "actor": "alice",
        }
    ]


def test_an_unreachable_webhook_is_logged_not_raised(monkeypatch, caplog):
    from tests.support.s3_server import free_port

    monkeypatch.setenv("RAILYARD_WEBHOOK_URL", f"http://127.0.0.1:{free_port()}/hook")
    payload = notify(Settings(), "run_failed", "boom")
    assert payload["event"] == "run_failed"
    assert "webhook delivery of run_failed failed" in caplog.text
