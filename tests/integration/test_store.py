"""The versioned model store: one behavioural suite for both backends, plus S3 faults.

S3 runs against moto's server over HTTP on 127.0.0.1 (tests/support/s3_server.py), never against
patched boto3. Fault injection wraps the store's own upload step (a crash before the
manifest) or really stops the server.
"""

from __future__ import annotations

import json
import logging
import threading

import pytest

from model_registry import (
    FileEntry,
    IntegrityError,
    InvalidStoreURI,
    ProtectedVersionError,
    StoreError,
    VersionConflictError,
    VersionNotFoundError,
    open_store,
)
from model_registry.local import LocalStore
from model_registry.manifest import SourceTree
from model_registry.s3 import S3Options, S3Store
from railyard.fsutil import sha256_file
from tests.support.s3_server import DUMMY_AWS_ENV, MotoS3Server, new_bucket
from tests.support.stores import (
    FAST,
    MODEL,
    SAVED_MODEL_FILES,
    fail_requests,
    make_saved_model,
    metadata,
    read_stored,
    reopen,
    stored_paths,
    tree_bytes,
    write_stored,
)


class SimulatedCrash(Exception):
    pass


# ---------------------------------------------------------------- behaviour, both backends


def test_publish_list_download_round_trip(store, tmp_path):
    source = make_saved_model(tmp_path / "export", seed=1)

    published = store.publish(MODEL, source, metadata=metadata(1))

    assert (published.model, published.version, published.reused) == (MODEL, 1, False)
    assert published.uri == f"{store.uri}/{MODEL}/1/"
    assert store.list_versions(MODEL) == [1]
    assert store.latest_version(MODEL) == 1
    manifest = store.get_manifest(MODEL, 1)
    assert manifest.to_json() == published.manifest.to_json()
    assert manifest.files == {
        name: FileEntry(sha256_file(source / name), (source / name).stat().st_size) for name in SAVED_MODEL_FILES
    }
    assert manifest.mlflow_run_id == "run-1" and manifest.metrics == {"auc": 0.81, "logloss": 0.5}
    assert manifest.identity == ("fingerprint-1", "commit-abc")
    assert manifest.created_at.endswith("Z") and manifest.empty_dirs == ("assets",)

    dest = store.download(MODEL, 1, tmp_path / "serving" / MODEL / "1")

    assert tree_bytes(dest) == tree_bytes(source)
    assert (dest / "assets").is_dir()
    assert list(dest.parent.iterdir()) == [dest]  # no staging folder left behind


def test_layout_is_what_tf_serving_expects(store, tmp_path):
    store.publish(MODEL, make_saved_model(tmp_path / "export", seed=1), metadata=metadata(1))

    paths = stored_paths(store)

    assert {f"1/{name}" for name in SAVED_MODEL_FILES} | {"1/railyard.json"} <= paths
    manifest = json.loads(read_stored(store, 1, "railyard.json"))
    assert {"mlflow_run_id", "metrics", "data_fingerprint", "code_version", "created_at", "files"} <= set(manifest)


def test_versions_count_up_and_unknown_models_are_empty(store, tmp_path):
    for n in (1, 2, 3):
        assert store.publish(MODEL, make_saved_model(tmp_path / f"e{n}", seed=n), metadata=metadata(n)).version == n

    assert store.list_versions(MODEL) == [1, 2, 3]
    assert store.latest_version(MODEL) == 3
    assert store.list_versions("other") == [] and store.latest_version("other") is None


def test_republishing_the_same_model_returns_the_existing_version(store, tmp_path):
    first = store.publish(MODEL, make_saved_model(tmp_path / "a", seed=1), metadata=metadata(1))

    again = store.publish(MODEL, make_saved_model(tmp_path / "b", seed=2), metadata=metadata(1, mlflow_run_id="x"))
    new_code = store.publish(MODEL, make_saved_model(tmp_path / "c", seed=3), metadata=metadata(1, code_version="d"))

    assert (again.version, again.reused, again.uri) == (1, True, first.uri)
    assert again.manifest.mlflow_run_id == "run-1"  # the existing version, untouched
    assert (new_code.version, new_code.reused) == (2, False)
    assert store.list_versions(MODEL) == [1, 2]


def test_concurrent_publishers_never_share_a_version(store, tmp_path):
    publishers = 4
    sources = [make_saved_model(tmp_path / f"export{n}", seed=n) for n in range(publishers)]
    start = threading.Barrier(publishers)
    results, errors = {}, []

    def publish(n: int) -> None:
        own_store = reopen(store)  # each publisher as its own process would be
        start.wait()
        try:
            results[n] = own_store.publish(MODEL, sources[n], metadata=metadata(n))
        except Exception as error:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=publish, args=(n,)) for n in range(publishers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sorted(r.version for r in results.values()) == [1, 2, 3, 4]
    assert store.list_versions(MODEL) == [1, 2, 3, 4]
    for n, published in results.items():
        dest = store.download(MODEL, published.version, tmp_path / "check" / str(n))
        assert tree_bytes(dest) == tree_bytes(sources[n])
        assert store.get_manifest(MODEL, published.version).mlflow_run_id == f"run-{n}"


def test_the_loser_of_a_race_takes_the_next_number_and_leaves_the_winner_alone(store, tmp_path, monkeypatch):
    late = reopen(store)
    stale_scan = late._scan(MODEL)  # the loser listed the store before the winner published
    winner = store.publish(MODEL, make_saved_model(tmp_path / "a", seed=1), metadata=metadata(1))
    monkeypatch.setattr(late, "_scan", lambda model: stale_scan)

    loser = late.publish(MODEL, make_saved_model(tmp_path / "b", seed=2), metadata=metadata(2))

    assert (winner.version, loser.version) == (1, 2)
    assert tree_bytes(store.download(MODEL, 1, tmp_path / "v1")) == tree_bytes(tmp_path / "a")
    assert tree_bytes(store.download(MODEL, 2, tmp_path / "v2")) == tree_bytes(tmp_path / "b")


def test_a_publisher_crowded_out_of_every_number_gets_a_clear_error(store, tmp_path, monkeypatch):
    monkeypatch.setattr(store, "_claim", lambda model, version: False)

    with pytest.raises(VersionConflictError, match="could not take a version number for recmodel"):
        store.publish(MODEL, make_saved_model(tmp_path / "a", seed=1), metadata=metadata(1))


def test_a_manifest_is_created_once_and_never_overwritten(store, tmp_path):
    published = store.publish(MODEL, make_saved_model(tmp_path / "a", seed=1), metadata=metadata(1))

    assert store._create_manifest(MODEL, 1, b'{"forged": true}') is False
    assert store.get_manifest(MODEL, 1).to_json() == published.manifest.to_json()


@pytest.mark.parametrize("files_uploaded", [0, 2, len(SAVED_MODEL_FILES)])
def test_a_crash_before_the_manifest_leaves_no_version_and_a_rerun_publishes(
    store, tmp_path, monkeypatch, files_uploaded
):
    source = make_saved_model(tmp_path / "export", seed=1)
    real_upload = store._upload

    def upload_then_crash(model: str, version: int, tree: SourceTree):
        real_upload(model, version, SourceTree(tree.files[:files_uploaded], tree.empty_dirs))
        raise SimulatedCrash("process killed before the manifest was written")

    monkeypatch.setattr(store, "_upload", upload_then_crash)
    with pytest.raises(SimulatedCrash):
        store.publish(MODEL, source, metadata=metadata(1))

    uploaded = {path for path in stored_paths(store) if path.startswith("1/")} - {"1/railyard.claim.json"}
    assert len(uploaded) == files_uploaded and "1/railyard.json" not in uploaded
    assert store.list_versions(MODEL) == [] and store.latest_version(MODEL) is None
    with pytest.raises(VersionNotFoundError, match="version 1 does not exist"):
        store.get_manifest(MODEL, 1)
    with pytest.raises(VersionNotFoundError):
        store.download(MODEL, 1, tmp_path / "dest")

    rerun = reopen(store).publish(MODEL, source, metadata=metadata(1))

    assert (rerun.version, rerun.reused) == (2, False)  # the crashed number stays taken, never reused
    assert store.list_versions(MODEL) == [2]
    assert tree_bytes(store.download(MODEL, 2, tmp_path / "dest")) == tree_bytes(source)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("flip_byte", r"variables/variables\.data-00000-of-00001 does not match the sha256"),
        ("truncate", r"variables/variables\.data-00000-of-00001 has 4095 bytes but its manifest says 4096"),
        ("delete", r"variables/variables\.data-00000-of-00001 is listed in the manifest but missing"),
    ],
)
def test_a_damaged_version_is_refused_on_download(store, tmp_path, damage, message):
    store.publish(MODEL, make_saved_model(tmp_path / "export", seed=1), metadata=metadata(1))
    name = "variables/variables.data-00000-of-00001"
    data = bytearray(read_stored(store, 1, name))
    if damage == "flip_byte":
        data[1234] ^= 0x01
        write_stored(store, 1, name, bytes(data))
    elif damage == "truncate":
        write_stored(store, 1, name, bytes(data[:-1]))
    else:
        write_stored(store, 1, name, None)
    dest = tmp_path / "serving" / "1"

    with pytest.raises(IntegrityError, match=message):
        store.download(MODEL, 1, dest)

    assert not dest.exists() and list(dest.parent.iterdir()) == []  # nothing half-written is left


def test_one_file_of_a_version_is_read_checked_against_its_manifest(store, tmp_path):
    """What the drift check reads of production: its statistics file alone, verified."""
    source = make_saved_model(tmp_path / "export", seed=1)
    (source / "assets.extra").mkdir(exist_ok=True)
    (source / "assets.extra" / "stats.json").write_text('{"rows": 3}')
    store.publish(MODEL, source, metadata=metadata(1))
    assert store.read_file(MODEL, 1, "assets.extra/stats.json") == b'{"rows": 3}'
    assert store.read_file(MODEL, 1, "assets.extra/absent.json") is None
    write_stored(store, 1, "assets.extra/stats.json", b'{"rows": 4}')
    with pytest.raises(IntegrityError, match=r"assets\.extra/stats\.json does not match the sha256"):
        store.read_file(MODEL, 1, "assets.extra/stats.json")


def test_download_refuses_a_non_empty_destination_but_fills_an_empty_one(store, tmp_path):
    source = make_saved_model(tmp_path / "export", seed=1)
    store.publish(MODEL, source, metadata=metadata(1))
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    empty = tmp_path / "empty"
    empty.mkdir()

    with pytest.raises(StoreError, match="not an empty folder"):
        store.download(MODEL, 1, busy)

    assert tree_bytes(busy) == {"keep.txt": b"mine"}
    assert tree_bytes(store.download(MODEL, 1, empty)) == tree_bytes(source)


def test_a_manifest_with_an_unsafe_path_is_refused(store, tmp_path):
    forged = json.loads(
        store.publish(MODEL, make_saved_model(tmp_path / "a", seed=1), metadata=metadata(1)).manifest.to_json()
    )
    forged["version"] = 2
    forged["files"]["../../escaped"] = forged["files"]["fingerprint.pb"]
    assert store._claim(MODEL, 2) and store._create_manifest(MODEL, 2, json.dumps(forged).encode())

    with pytest.raises(IntegrityError, match=r"unsafe path '\.\./\.\./escaped'"):
        store.download(MODEL, 2, tmp_path / "dest" / "2")

    assert not (tmp_path / "escaped").exists()


def test_delete_version_refuses_protected_versions_and_never_reuses_numbers(store, tmp_path):
    for n in (1, 2, 3):
        store.publish(MODEL, make_saved_model(tmp_path / f"e{n}", seed=n), metadata=metadata(n))

    with pytest.raises(ProtectedVersionError, match="version 2"):
        store.delete_version(MODEL, 2, protected=[2])
    store.delete_version(MODEL, 2, protected=[1])
    store.delete_version(MODEL, 3)
    with pytest.raises(VersionNotFoundError):
        store.delete_version(MODEL, 3)

    assert store.list_versions(MODEL) == [1]
    assert not any(path.startswith(("2/", "3/")) for path in stored_paths(store))
    assert store.publish(MODEL, make_saved_model(tmp_path / "e4", seed=4), metadata=metadata(4)).version == 4


def test_retention_keeps_the_newest_and_the_protected_versions(store, tmp_path):
    for n in range(1, 6):
        store.publish(MODEL, make_saved_model(tmp_path / f"e{n}", seed=n), metadata=metadata(n))

    deleted = store.apply_retention(MODEL, keep_last=2, protected=[1, 4])

    assert deleted == [2, 3]
    assert store.list_versions(MODEL) == [1, 4, 5]
    assert store.apply_retention(MODEL, keep_last=2, protected=[1]) == [] and store.list_versions(MODEL) == [1, 4, 5]
    with pytest.raises(ValueError, match="keep_last"):
        store.apply_retention(MODEL, keep_last=0)


@pytest.mark.parametrize("name", ["", "a/b", "..", "../escape", "a/../b", ".hidden", "x" * 101])
def test_invalid_model_names_are_refused_before_anything_is_written(store, tmp_path, name):
    source = make_saved_model(tmp_path / "export", seed=1)

    with pytest.raises(ValueError, match="invalid model name"):
        store.publish(name, source, metadata=metadata(1))
    with pytest.raises(ValueError, match="invalid model name"):
        store.list_versions(name)

    assert reopen(store).list_versions(MODEL) == []
    if isinstance(store, LocalStore):
        assert not store.root.exists()
    else:
        assert store.client.list_objects_v2(Bucket=store.bucket).get("KeyCount") == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"data_fingerprint": None}, "data_fingerprint"),
        ({"code_version": ""}, "code_version"),
        ({"files": {}}, "may not set files"),
        ({"metrics": {"auc": float("nan")}}, r"metadata\['metrics'\] is not plain JSON"),
        ({"run_started": object()}, r"metadata\['run_started'\] is not plain JSON"),
    ],
)
def test_bad_metadata_is_refused_with_a_clear_error(store, tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        store.publish(MODEL, make_saved_model(tmp_path / "export", seed=1), metadata=metadata(1, **change))
    assert store.list_versions(MODEL) == []


def test_a_folder_that_is_not_a_saved_model_is_refused(store, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="does not exist"):
        store.publish(MODEL, tmp_path / "missing", metadata=metadata(1))
    with pytest.raises(ValueError, match="saved_model.pb is missing"):
        store.publish(MODEL, tmp_path / "empty", metadata=metadata(1))
    source = make_saved_model(tmp_path / "export", seed=1)
    (source / "railyard.json").write_text("{}")
    with pytest.raises(ValueError, match="reserves"):
        store.publish(MODEL, source, metadata=metadata(1))


@pytest.mark.parametrize("version", [0, -1, "1", 1.0, True])
def test_versions_must_be_positive_integers(store, version):
    with pytest.raises(ValueError, match="invalid version"):
        store.get_manifest(MODEL, version)


# ---------------------------------------------------------------- store URIs


@pytest.mark.parametrize(
    ("uri", "kind", "expected_uri"),
    [
        ("s3://bucket-a/some/prefix/", S3Store, "s3://bucket-a/some/prefix"),
        ("s3://bucket-a", S3Store, "s3://bucket-a"),
        ("file:///srv/store", LocalStore, "file:///srv/store"),
        ("/srv/store", LocalStore, "file:///srv/store"),
    ],
)
def test_open_store_understands_store_uris(uri, kind, expected_uri):
    store = open_store(uri)
    assert isinstance(store, kind) and store.uri == expected_uri


def test_open_store_resolves_relative_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert open_store("rel/store").uri == (tmp_path / "rel" / "store").as_uri()


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("", "empty"),
        ("gs://bucket/x", "unsupported store URI"),
        ("http://example.com/models", "unsupported store URI"),
        ("s3://", "invalid S3 bucket name"),
        ("s3://Bad_Bucket/x", "invalid S3 bucket name"),
        ("s3://bucket/a/../b", "invalid S3 prefix"),
        ("s3://bucket/x?versionId=1", "query"),
        ("file://otherhost/srv", "must be local"),
    ],
)
def test_open_store_refuses_bad_uris(uri, message):
    with pytest.raises(InvalidStoreURI, match=message) as refused:
        open_store(uri)
    assert refused.value.exit_code == 2 and "RAILYARD_STORE_URI" in refused.value.next_step


# ---------------------------------------------------------------- S3 only: transfers and faults


def test_large_files_go_up_in_parallel_multipart_and_round_trip(s3_bucket, tmp_path):
    options = S3Options(max_attempts=3, multipart_threshold=5 * 2**20, multipart_chunksize=5 * 2**20)
    store = open_store(s3_bucket.uri("models"), s3_endpoint_url=s3_bucket.endpoint_url, s3_options=options)
    source = make_saved_model(tmp_path / "export", seed=1, variables_size=11 * 2**20)

    published = store.publish(MODEL, source, metadata=metadata(1))

    key = f"models/{MODEL}/1/variables/variables.data-00000-of-00001"
    assert store.client.head_object(Bucket=s3_bucket.name, Key=key)["ETag"].endswith('-3"')  # 3 parts
    entry = published.manifest.files["variables/variables.data-00000-of-00001"]
    assert entry == FileEntry(sha256_file(source / "variables/variables.data-00000-of-00001"), 11 * 2**20)
    assert tree_bytes(store.download(MODEL, 1, tmp_path / "dest")) == tree_bytes(source)


@pytest.mark.parametrize("failure", ["server_error", "throttled", "connection_reset"])
def test_transient_s3_errors_are_retried(s3_bucket, tmp_path, failure):
    store = open_store(s3_bucket.uri("models"), s3_endpoint_url=s3_bucket.endpoint_url, s3_options=FAST)
    injected = fail_requests(store, "PutObject", failures=2 if failure != "throttled" else 1, failure=failure)

    published = store.publish(MODEL, make_saved_model(tmp_path / "export", seed=1), metadata=metadata(1))

    assert injected and published.version == 1
    assert tree_bytes(store.download(MODEL, 1, tmp_path / "dest")) == tree_bytes(tmp_path / "export")


def test_persistent_s3_errors_end_in_a_clear_error_after_the_last_try(s3_bucket, tmp_path):
    store = open_store(s3_bucket.uri("models"), s3_endpoint_url=s3_bucket.endpoint_url, s3_options=FAST)
    injected = fail_requests(store, "PutObject", failures=100, failure="server_error")

    with pytest.raises(StoreError, match=r"writing s3://.*/1/railyard\.claim\.json failed \(up to 3 attempts"):
        store.publish(MODEL, make_saved_model(tmp_path / "export", seed=1), metadata=metadata(1))

    assert len(injected) == FAST.max_attempts


def test_s3_server_stopped_mid_upload_gives_a_clear_error_and_no_version(tmp_path, monkeypatch):
    for name, value in DUMMY_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    server = MotoS3Server()
    server.start()
    try:
        bucket = new_bucket(server.endpoint_url)
        store = open_store(bucket.uri("models"), s3_endpoint_url=server.endpoint_url, s3_options=FAST)
        source = make_saved_model(tmp_path / "export", seed=1)
        real_upload = store._upload

        def upload_one_file_then_lose_the_server(model: str, version: int, tree: SourceTree):
            real_upload(model, version, SourceTree(tree.files[:1]))
            server.stop()
            return real_upload(model, version, SourceTree(tree.files[1:], tree.empty_dirs))

        monkeypatch.setattr(store, "_upload", upload_one_file_then_lose_the_server)
        with pytest.raises(StoreError, match=r"upload of .* to s3://.*/1/.* failed .*Could not connect"):
            store.publish(MODEL, source, metadata=metadata(1))

        server.start()  # same port, same in-memory state
        assert store.list_versions(MODEL) == []
        rerun = reopen(store).publish(MODEL, source, metadata=metadata(1))
        assert rerun.version == 2 and store.list_versions(MODEL) == [2]
    finally:
        server.stop()


def test_no_secret_reaches_the_logs(s3_bucket, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)  # botocore's debug output included
    store = open_store(s3_bucket.uri("models"), s3_endpoint_url=s3_bucket.endpoint_url, s3_options=FAST)

    store.publish(MODEL, make_saved_model(tmp_path / "export", seed=1), metadata=metadata(1))
    store.download(MODEL, 1, tmp_path / "dest")

    assert "published recmodel version 1" in caplog.text
    assert DUMMY_AWS_ENV["AWS_SECRET_ACCESS_KEY"] not in caplog.text


def test_find_names_the_version_holding_a_model_of_this_data_and_code(store, tmp_path):
    published = store.publish("recmodel", make_saved_model(tmp_path / "export", 1), metadata=metadata(1))
    found = store.find("recmodel", "fingerprint-1", "commit-abc")
    assert found is not None and found.version == published.version == 1
    assert store.find("recmodel", "fingerprint-2", "commit-abc") is None
    assert store.find("recmodel", "fingerprint-1", "commit-def") is None


def test_the_transition_log_appends_once_per_record_and_verifies(store):
    first = store.append_transition(MODEL, {"version": 1, "stage": "candidate"})
    second = store.append_transition(MODEL, {"version": 1, "stage": "staging"})
    assert (first["seq"], second["seq"]) == (0, 1) and second["prev"] != first["prev"]
    assert [r["stage"] for r in store.transitions(MODEL)] == ["candidate", "staging"]
    assert store._append_history(MODEL, 1, b"{}") is False  # a record is never overwritten
    assert store.list_versions(MODEL) == []  # the log is not a version
    assert reopen(store).transitions(MODEL) == store.transitions(MODEL)


def test_what_an_interrupted_publication_left_is_removed_and_its_number_stays_taken(store, tmp_path, monkeypatch):
    kept = store.publish(MODEL, make_saved_model(tmp_path / "kept", seed=1), metadata=metadata(1))
    real_upload = store._upload

    def upload_then_crash(model: str, version: int, tree: SourceTree):
        real_upload(model, version, SourceTree(tree.files[:3], tree.empty_dirs))
        raise SimulatedCrash("process killed before the manifest was written")

    monkeypatch.setattr(store, "_upload", upload_then_crash)
    with pytest.raises(SimulatedCrash):
        store.publish(MODEL, make_saved_model(tmp_path / "lost", seed=2), metadata=metadata(2))
    monkeypatch.setattr(store, "_upload", real_upload)
    assert any(path.startswith("2/") for path in stored_paths(store))

    assert reopen(store).remove_unfinished(MODEL) == [2]
    assert not any(path.startswith("2/") for path in stored_paths(store))  # the orphans are gone
    assert store.list_versions(MODEL) == [kept.version] and store.remove_unfinished(MODEL) == []
    assert tree_bytes(store.download(MODEL, 1, tmp_path / "dest")) == tree_bytes(tmp_path / "kept")
    third = store.publish(MODEL, make_saved_model(tmp_path / "next", seed=3), metadata=metadata(3))
    assert third.version == 3  # the removed number is never reused
