"""The ranking service's settings (RAILYARD_RANKING_*): their defaults are the service's, the
environment changes them, and a value out of range is refused in words, naming its variable,
by `railyard rank-server` before anything starts."""

import os

import pytest

from cli.main import main
from railyard.configs import RankingConfig
from railyard.settings import SettingsError, load_settings


@pytest.fixture(autouse=True)
def no_ranking_settings(monkeypatch):
    for name in [name for name in os.environ if name.startswith("RAILYARD_RANKING_")]:
        monkeypatch.delenv(name)


def test_the_defaults_are_the_services():
    settings = load_settings()
    assert (settings.ranking_host, settings.ranking_port) == ("127.0.0.1", 8600)
    assert settings.ranking_config() == RankingConfig(
        candidates=100, share_ttl_s=0.5, labels_ttl_s=1.0, live_flush_s=0.25
    )
    assert settings.ranking_replica_options() == {"timeout_s": 5.0, "attempts": 2, "backoff_s": 0.05}


def test_the_environment_sets_them(monkeypatch):
    values = {
        "HOST": "0.0.0.0",
        "PORT": "8700",
        "CANDIDATES": "250",
        "REPLICA_TIMEOUT_S": "1.5",
        "REPLICA_ATTEMPTS": "3",
        "REPLICA_BACKOFF_S": "0",
        "SHARE_TTL_S": "0",
        "LABELS_TTL_S": "2",
        "LIVE_FLUSH_S": "0.1",
    }
    for name, value in values.items():
        monkeypatch.setenv(f"RAILYARD_RANKING_{name}", value)
    settings = load_settings()
    assert (settings.ranking_host, settings.ranking_port) == ("0.0.0.0", 8700)
    assert settings.ranking_config() == RankingConfig(
        candidates=250, share_ttl_s=0.0, labels_ttl_s=2.0, live_flush_s=0.1
    )
    assert settings.ranking_replica_options() == {"timeout_s": 1.5, "attempts": 3, "backoff_s": 0.0}


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("HOST", "", "at least 1 character"),
        ("PORT", "0", "greater than or equal to 1"),
        ("PORT", "65536", "less than or equal to 65535"),
        ("CANDIDATES", "0", "greater than or equal to 1"),
        ("CANDIDATES", "10001", "less than or equal to 10000"),
        ("REPLICA_TIMEOUT_S", "0", "greater than 0"),
        ("REPLICA_ATTEMPTS", "0", "greater than or equal to 1"),
        ("REPLICA_BACKOFF_S", "-1", "greater than or equal to 0"),
        ("SHARE_TTL_S", "-1", "greater than or equal to 0"),
        ("LABELS_TTL_S", "-1", "greater than or equal to 0"),
        ("LIVE_FLUSH_S", "0", "greater than 0"),
    ],
)
def test_a_value_out_of_range_is_refused_naming_its_variable(railyard_home, monkeypatch, capsys, name, value, words):
    monkeypatch.setenv(f"RAILYARD_RANKING_{name}", value)
    with pytest.raises(SettingsError, match=f"^RAILYARD_RANKING_{name}: .* should (be|have) {words}$"):
        load_settings()
    with pytest.raises(SystemExit) as ended:
        main(["rank-server"])
    assert ended.value.code == 2  # refused: nothing started
    first, second = capsys.readouterr().err.splitlines()
    assert first.startswith(f"error: RAILYARD_RANKING_{name}: ") and second.startswith(
        "next: fix the RAILYARD_* variable"
    )
