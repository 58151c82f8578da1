"""TF Serving config rendering with the real protos (no TensorFlow import needed)."""

import pytest
from google.protobuf import text_format
from tensorflow_serving.config.model_server_config_pb2 import ModelServerConfig

from infra.tfserving import model_config as C

# tensorflow/serving docs/serving_config.md, "Assigning String Labels to Model Versions".
DOCUMENTED_EXAMPLE = """
model_config_list {
  config {
    name: 'my_model'
    base_path: '/models/my_model/'
    model_platform: 'tensorflow'
    model_version_policy {
      specific {
        versions: 42
        versions: 43
      }
    }
    version_labels {
      key: 'stable'
      value: 42
    }
    version_labels {
      key: 'canary'
      value: 43
    }
  }
}
"""


def test_rendered_config_equals_tf_servings_documented_example():
    rendered = C.render_model_config("my_model", "/models/my_model/", [43, 42], {"stable": 42, "canary": 43})
    assert rendered == text_format.Parse(DOCUMENTED_EXAMPLE, ModelServerConfig())


def test_text_round_trip_and_atomic_write(tmp_path):
    config = C.render_model_config("recmodel", "/models/recmodel", {3, 4}, {"stable": 3, "canary": 4})
    path = tmp_path / "serving" / "models.config"
    C.write_config_atomically(path, config)
    assert C.read_config(path) == config
    assert C.parse_text(C.to_text(config)) == config
    assert [p.name for p in path.parent.iterdir()] == ["models.config"]  # no temp file left behind


def test_base_config_keeps_other_models_and_replaces_this_one():
    base = C.render_model_config("other", "/models/other", {1}, {"stable": 1})
    base = C.render_model_config("recmodel", "/models/recmodel", {1}, {"stable": 1}, base=base)
    updated = C.render_model_config("recmodel", "/models/recmodel", {1, 2}, {"stable": 1, "canary": 2}, base=base)
    assert C.model_names(updated) == ["other", "recmodel"]
    assert C.served_versions(updated, "other") == ({1}, {"stable": 1})
    assert C.served_versions(updated, "recmodel") == ({1, 2}, {"stable": 1, "canary": 2})
    assert C.served_versions(updated, "absent") == (set(), {})


def test_no_versions_means_serve_nothing_and_leaves_the_model_out():
    """TF Serving waits forever at start-up for a model listed with no version: leave it out
    (a reload unloads a model it does not name), and keep the model list set (TF Serving takes
    no action at all on a config without one)."""
    config = C.render_model_config("recmodel", "/models/recmodel", [], {})
    assert C.served_versions(config, "recmodel") == (set(), {})
    assert C.model_names(config) == [] and config.WhichOneof("config") == "model_config_list"
    assert C.parse_text(C.to_text(config)).WhichOneof("config") == "model_config_list"

    base = C.render_model_config("other", "/models/other", {1}, {"stable": 1})
    base = C.render_model_config("recmodel", "/models/recmodel", {1}, {"stable": 1}, base=base)
    assert C.model_names(C.render_model_config("recmodel", "/models/recmodel", [], {}, base=base)) == ["other"]


# What an older Railyard wrote after the only version was rejected: TF Serving never starts from it.
UNSERVED = """
model_config_list {
  config { name: "other" base_path: "/models/other" model_platform: "tensorflow"
           model_version_policy { specific { versions: 1 } } }
  config { name: "recmodel" base_path: "/models/recmodel" model_platform: "tensorflow"
           model_version_policy { specific { } } }
}
"""


def test_a_config_file_is_made_startable(tmp_path):
    path = tmp_path / "models" / "models.config"
    assert C.ensure_config_file(path) == [] and C.read_config(path) == ModelServerConfig()  # none yet: empty

    path.write_text(UNSERVED)
    assert C.ensure_config_file(path) == ["recmodel"]
    assert C.model_names(C.read_config(path)) == ["other"]
    kept = C.read_config(path).model_config_list.config[0]
    assert kept.model_version_policy.specific.versions == [1]
    assert C.ensure_config_file(path) == []  # nothing left to drop


@pytest.mark.parametrize(
    ("content", "cause"),
    [(b"\xff\xfe garbage \x00\x81", "not UTF-8 text"), (b"model_config_list { nonsense: 1 }", "nonsense")],
)
def test_a_garbage_config_file_is_named_with_its_cause(tmp_path, content, cause):
    path = tmp_path / "models.config"
    path.write_bytes(content)
    for read in (C.read_config, C.ensure_config_file):
        with pytest.raises(C.ConfigFileError) as error:
            read(path)
        assert str(error.value).startswith(f"{path} is not a valid TF Serving ModelServerConfig") and cause in str(
            error.value
        )
        assert "`railyard status`" in error.value.next_step
    assert path.read_bytes() == content  # left as it was


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"labels": {"can-ary": 1}}, "invalid version label 'can-ary'"),
        ({"labels": {"canary": 2}}, "label 'canary' points at version 2"),
        ({"base_path": "models/recmodel"}, "must be absolute"),
        ({"versions": [-1]}, "non-negative integers"),
        ({"versions": [True]}, "non-negative integers"),
        ({"model_name": "../x"}, "invalid model name"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_message(kwargs, message):
    arguments = {"model_name": "recmodel", "base_path": "/models/recmodel", "versions": [1], "labels": {}} | kwargs
    with pytest.raises(ValueError, match=message):
        C.render_model_config(**arguments)


def test_uri_base_paths_are_absolute():
    config = C.render_model_config("recmodel", "gs://bucket/recmodel", [1], {})
    assert config.model_config_list.config[0].base_path == "gs://bucket/recmodel"


def test_parse_error_names_the_source():
    with pytest.raises(ValueError, match=r"/etc/models.config is not a valid TF Serving ModelServerConfig"):
        C.parse_text("model_config_list { nonsense: 1 }", source="/etc/models.config")
