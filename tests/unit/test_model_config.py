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


def test_no_versions_means_serve_nothing():
    config = C.render_model_config("recmodel", "/models/recmodel", [], {})
    assert C.served_versions(config, "recmodel") == (set(), {})
    assert config.model_config_list.config[0].model_version_policy.HasField("specific")


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
