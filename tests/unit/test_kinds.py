"""The model seam without training: how RAILYARD_MODEL_KIND finds a kind, what is checked before
any data is read, a kind's own settings, and what goes into a version's fingerprint."""

from __future__ import annotations

import re

import pytest

from railyard.configs import TrainConfig
from railyard.kinds.base import KindConfig
from railyard.kinds.fresh_wd import FreshWideDeep
from railyard.kinds.neural_cf import NeuralCF
from railyard.kinds.registry import KINDS, BadModelKind, load_kind, resolve_kind
from railyard.model_input import declared_aggregates, layout
from railyard.settings import Settings, SettingsError, load_settings
from railyard.training import code_version

TRAIN = Settings().train_config()


class TinyConfig(KindConfig):
    width: int = 3


class Tiny:
    """A kind as a class: Railyard instantiates it."""

    name = "tiny"
    Config = TinyConfig
    reads = ("user_n", "movie_genres")
    output = "probability"

    def build(self, context, config):  # pragma: no cover - never trained here
        raise NotImplementedError


class ReadsNothingDeclared(Tiny):
    reads = ("user_n", "user_shoe_size")


class NoBuild:
    name = "nobuild"
    Config = TinyConfig
    reads = ()


TINY = Tiny()


def test_a_registered_name_and_package_module_object_resolve():
    assert list(KINDS) == ["neural_cf", "fresh_wd"] and isinstance(resolve_kind("neural_cf"), NeuralCF)
    assert isinstance(resolve_kind("fresh_wd"), FreshWideDeep)
    assert isinstance(resolve_kind(f"{__name__}:Tiny"), Tiny)  # a class is instantiated
    assert resolve_kind(f"{__name__}:TINY") is TINY  # an instance is the kind


@pytest.mark.parametrize(
    ("spec", "said"),
    [
        ("neural_fc", "neither a registered kind (neural_cf, fresh_wd) nor package.module:object"),
        ("tests.unit.no_such_module:Kind", "cannot import tests.unit.no_such_module"),
        (f"{__name__}:Missing", f"{__name__} has no Missing"),
        (f"{__name__}:ReadsNothingDeclared", "reads 'user_shoe_size', which no declaration names"),
        (f"{__name__}:NoBuild", "build(context, config) is missing"),
    ],
)
def test_a_kind_that_cannot_be_used_is_refused_before_any_work(spec, said):
    with pytest.raises(BadModelKind, match=re.escape(said)) as refused:
        load_kind(spec)
    assert refused.value.exit_code == 2 and "RAILYARD_MODEL_KIND" in refused.value.next_step


def test_a_kinds_settings_are_its_own_read_with_its_prefix(monkeypatch):
    monkeypatch.setenv("RAILYARD_NEURAL_CF_EMBEDDING_DIM", "24")
    monkeypatch.setenv("RAILYARD_TINY_WIDTH", "7")
    assert load_kind("neural_cf").config.embedding_dim == 24
    assert load_kind(f"{__name__}:Tiny").config.width == 7
    assert load_kind("neural_cf", embedding_dim=4).config.embedding_dim == 4  # a test's override on top
    assert not hasattr(Settings(), "embedding_dim")  # not a field of the global settings any more

    monkeypatch.setenv("RAILYARD_EMBEDDING_DIM", "24")  # its old name: refused, naming the new one
    with pytest.raises(SettingsError, match="RAILYARD_EMBEDDING_DIM is now RAILYARD_NEURAL_CF_EMBEDDING_DIM"):
        load_settings()
    monkeypatch.delenv("RAILYARD_EMBEDDING_DIM")

    monkeypatch.setenv("RAILYARD_NEURAL_CF_EMBEDDING_DIM", "sixteen")
    with pytest.raises(SettingsError, match="RAILYARD_NEURAL_CF_EMBEDDING_DIM: Input should be a valid integer"):
        load_kind("neural_cf")


def test_the_kind_its_settings_and_the_training_settings_are_in_the_fingerprint(monkeypatch):
    neural = code_version(TRAIN, load_kind("neural_cf"))
    assert neural == code_version(TRAIN, load_kind("neural_cf"))  # same data and code: same version
    assert "+neural_cf-" in neural
    assert code_version(TRAIN, load_kind("neural_cf", embedding_dim=32)) != neural
    assert code_version(TrainConfig(**{**TRAIN.__dict__, "validation_fraction": 0.2}), load_kind("neural_cf")) != neural
    tiny = code_version(TRAIN, load_kind(f"{__name__}:Tiny"))
    assert "+tiny-" in tiny and tiny != neural


def test_params_name_the_kind_what_it_reads_and_its_settings():
    params = load_kind(f"{__name__}:Tiny").params()
    assert params == {
        "model_kind": "tiny",
        "model_kind_spec": f"{__name__}:Tiny",
        "model_kind_reads": "user_n,movie_genres",
        "tiny.width": 3,
    }


def test_kinds_read_the_declared_layout_by_name():
    from railyard import feature_spec as spec

    for entity in ("user", "movie"):
        assert layout(entity) == spec.layout(entity)
    assert set(declared_aggregates()) == {*spec.names("user"), *spec.names("movie")}
    with pytest.raises(ValueError, match="no declared entity 'session'"):
        layout("session")


def test_a_predict_answer_is_read_by_its_only_output_whatever_the_kind_named_it():
    from railyard import contract

    assert contract.scores_of({"probability": [[0.25], [0.75]]}).tolist() == [0.25, 0.75]
    with pytest.raises(contract.NotOneOutput, match=r"one output, this answer has \['a', 'b'\]"):
        contract.scores_of({"a": [[0.1]], "b": [[0.2]]})
    assert contract.describe("features", "probability") == (
        "features: userId, movieId, user_features, movie_features (float32/int64) -> probability (float32)"
    )
