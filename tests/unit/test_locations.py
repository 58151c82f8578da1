"""Where a feature folder lives: local paths and s3:// URIs, and the setting that names it."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from railyard.locations import Location
from railyard.settings import Settings


def test_local_paths_and_s3_uris_join_and_name_like_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    local = Location.of("features")
    assert local.url == str(tmp_path / "features") and not local.is_s3 and local.local_path == tmp_path / "features"
    s3 = Location.of("s3://bucket/runs/", "http://127.0.0.1:9000")
    assert (s3 / "train" / "part-000000.parquet").url == "s3://bucket/runs/train/part-000000.parquet"
    assert (s3 / "meta.json").endpoint_url == "http://127.0.0.1:9000" and s3.name == "runs"
    assert (s3 / "meta.json").parent == s3 and Location.of(s3) is s3
    with pytest.raises(ValueError, match="is not a local path"):
        s3.local_path


@pytest.mark.parametrize(
    ("uri", "message"), [("gs://bucket/x", "a local path or an s3:// URI"), ("s3:///x", "names no bucket")]
)
def test_a_features_uri_that_is_neither_is_refused_when_the_settings_load(uri, message, monkeypatch):
    monkeypatch.setenv("RAILYARD_FEATURES_URI", uri)
    with pytest.raises(ValidationError, match=message):
        Settings()


def test_each_run_gets_its_own_feature_folder(tmp_path):
    assert Settings(home=tmp_path).feature_folder("run-1") == Location.of(tmp_path / "runs" / "run-1" / "features")
    on_s3 = Settings(home=tmp_path, features_uri="s3://b/features", s3_endpoint_url="http://127.0.0.1:9")
    assert on_s3.feature_folder("run-1") == Location("s3://b/features/run-1", "http://127.0.0.1:9")
    assert Path(Settings(home=tmp_path, features_uri="rel").features_uri).is_absolute()
