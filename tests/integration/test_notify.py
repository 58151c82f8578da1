"""Notifications: a JSON post to the configured webhook; a dead webhook never fails the caller."""

import logging

import pytest

from railyard.notify import notify, redact_url
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


SECRET = "t0ken-s3cr3t"


@pytest.mark.parametrize(
    "url",
    [
        f"hooks.example.com/services/{SECRET}?key={SECRET}",  # no scheme: urllib refuses it
        f"http://user:{SECRET}@127.0.0.1:9/hook?token={SECRET}",  # nothing listens on port 9
        f"http://127.0.0.1:9/hook with space/{SECRET}",  # http.client refuses control characters
    ],
)
def test_a_broken_webhook_never_raises_and_its_secret_reaches_no_log(monkeypatch, caplog, capsys, url):
    monkeypatch.setenv("RAILYARD_WEBHOOK_URL", url)
    settings = Settings()
    with caplog.at_level(logging.DEBUG):
        payload = notify(settings, "promoted", "recmodel version 3 is in production", version=3)
    assert payload["version"] == 3
    assert "webhook delivery of promoted" in caplog.text
    captured = capsys.readouterr()
    for text in (caplog.text, captured.out, captured.err, repr(settings), str(settings.model_dump())):
        assert SECRET not in text


def test_redacted_urls_keep_only_scheme_and_host():
    assert redact_url(f"https://u:{SECRET}@hooks.example.com:8443/x/{SECRET}?t={SECRET}") == (
        "https://hooks.example.com:8443/…"
    )
    assert redact_url("https://hooks.example.com") == "https://hooks.example.com"
    assert redact_url(f"hooks.example.com/{SECRET}") == "<a webhook URL without scheme or host>"
