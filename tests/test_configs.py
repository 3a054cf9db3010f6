"""Every preset and group option composes into the typed config; bad keys and types fail at compose time."""
from __future__ import annotations

import pytest
from conftest import CONF_DIR, compose_config
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from enas.config import Config, SyntheticData

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
DATA_OPTIONS = sorted(p.stem for p in (CONF_DIR / "data").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_into_typed_config(experiment, tmp_path):
    # arch= only matters to mode=train presets (micro_final_proxy), which require it
    config, resolved = compose_config([f"experiment={experiment}", "arch=enas_micro_paper"], tmp_path)
    assert isinstance(config, Config)
    assert resolved["paths"]["output_dir"] == str(tmp_path)


@pytest.mark.parametrize("option", DATA_OPTIONS)
def test_every_data_option_composes(option, tmp_path):
    extra = ["data.path=x.npz"] if option == "npz" else []
    config, _ = compose_config([f"data={option}", *extra], tmp_path)
    assert option.startswith(config.data.name)  # synthetic_tiny is a sized synthetic


def test_defaults_are_the_paper_micro_search(tmp_path):
    config, _ = compose_config([], tmp_path)
    assert (config.search_space.channels, config.search_space.num_layers, config.search_space.num_nodes) == (20, 6, 5)
    assert (config.trainer.batch_size, config.trainer.epochs, config.trainer.weight_decay) == (160, 150, 2e-4)
    assert (config.controller.lr, config.controller.num_updates, config.controller.num_aggregate) == (0.0035, 30, 10)
    assert config.data.name == "cifar10" and config.data.num_valid == 5000


def test_smoke_uses_generated_data(tmp_path):
    config, _ = compose_config(["experiment=smoke"], tmp_path)
    assert isinstance(config.data, SyntheticData)


def test_unknown_key_is_rejected(tmp_path):
    with pytest.raises(ConfigCompositionException, match="lr_maximum"):
        compose_config(["trainer.lr_maximum=0.1"], tmp_path)


def test_wrong_type_is_rejected(tmp_path):
    with pytest.raises((ConfigCompositionException, ValidationError), match="epochs"):
        compose_config(["trainer.epochs=many"], tmp_path)


def test_key_of_another_data_option_is_rejected(tmp_path):
    with pytest.raises(ConfigCompositionException, match="path"):
        compose_config(["data=synthetic", "data.path=x.npz"], tmp_path)


@pytest.mark.parametrize("override, message", [
    ("mode=train_forever", "mode='train_forever'"),
    ("trainer.strategy=evolution", "trainer.strategy='evolution'"),
    ("search_space.channels=7", "search_space.channels=7"),
    ("device=tpu", "device='tpu'"),
    ("derive.proxy_seeds=0", "proxy_seeds=0"),
])
def test_bad_values_name_the_value_and_what_is_allowed(override, message, tmp_path):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        compose_config([override], tmp_path)


@pytest.mark.parametrize("space", ["micro", "macro", "nb201"])
def test_controller_trainer_and_retrain_follow_the_search_space(space, tmp_path):
    config, _ = compose_config([f"search_space={space}"], tmp_path)
    assert config.search_space.name == space
    expected = {"micro": (0.44, 160, 150, 630), "macro": (1.5, 128, 310, 310), "nb201": (1.1, 128, 250, 200)}[space]
    assert (config.controller.tanh_op, config.trainer.batch_size, config.trainer.epochs,
            config.retrain.epochs) == expected
    assert config.controller.skip_weight == (0.8 if space == "macro" else 0.0)


def test_bad_nb201_depth_is_rejected_with_the_rule(tmp_path):
    with pytest.raises(ValueError, match="multiple of 3"):
        compose_config(["search_space=nb201", "search_space.num_layers=7"], tmp_path)


@pytest.mark.parametrize("space", ["micro", "macro", "nb201"])
def test_enas_paper_preset_restores_the_paper_search_on_every_space(space, tmp_path):
    config, _ = compose_config(["experiment=enas_paper", f"search_space={space}"], tmp_path)
    assert (config.trainer.warmup_epochs, config.trainer.few_shot_epoch) == (0, 0)
    assert (config.derive.score, config.derive.prefilter, config.trainer.strategy) == ("acc", None, "enas")
    assert (config.trainer.shared_sampling, config.trainer.reward) == ("policy", "acc")


def test_nb201_defaults_keep_the_controller_out_of_the_shared_weights_and_the_benchmark_controller_one_switch_away(
        tmp_path):
    default, _ = compose_config(["search_space=nb201"], tmp_path)
    assert (default.trainer.shared_sampling, default.trainer.reward) == ("uniform", "loss")
    assert (default.controller.tanh_op, default.controller.temperature) == (1.1, 1.0)
    autodl, _ = compose_config(["search_space=nb201", "controller=nb201_autodl"], tmp_path)
    assert (autodl.controller.tanh_op, autodl.controller.temperature) == (2.5, 5.0)
    assert autodl.controller.lr == default.controller.lr and autodl.controller.num_updates == 50


def test_nb201_30min_preset_is_the_measured_budget(tmp_path):
    config, _ = compose_config(["experiment=nb201_30min"], tmp_path)
    assert (config.search_space.name, config.search_space.num_layers) == ("nb201", 6)
    assert (config.trainer.epochs, config.trainer.lr_t0_epochs, config.trainer.warmup_epochs) == (100, 100, 60)
    assert (config.controller.lr, config.controller.num_updates, config.controller.num_aggregate) == (0.01, 20, 10)
    assert (config.derive.prefilter, config.derive.score, config.derive.proxy_epochs) == ("naswot", "loss", 10)
