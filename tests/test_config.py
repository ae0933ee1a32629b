"""RunConfig: the training knobs are validated where they enter (flags, YAML, Python)."""

import pytest

from mmkeras.config import RunConfig
from mmkeras.errors import UserError


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("gradient_accumulation", 0, "gradient_accumulation must be at least 1"),
        ("mixed_precision", "fp8", "mixed_precision must be one of auto, off, float16, bfloat16"),
        ("class_weight", "inverse", "class_weight must be one of none, balanced"),
        ("checkpoint_steps", -1, "checkpoint_steps must not be negative"),
        ("strategy", "tpu-pod", "strategy must be one of auto, one, mirrored, multi-worker, tpu"),
        ("new_layers_lr_scale", 0.0, "new_layers_lr_scale must be positive"),
    ],
)
def test_out_of_range_knobs_are_user_errors(setting, value, message):
    with pytest.raises(UserError, match=message):
        RunConfig(**{setting: value})


def test_knobs_come_from_yaml_with_dashes_and_flags_override(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        "gradient-accumulation: 4\nmixed-precision: bfloat16\nclass-weight: balanced\ncheckpoint-steps: 10\n"
    )
    config = RunConfig.from_yaml(path).replace(gradient_accumulation=2, class_weight=None)
    assert (config.gradient_accumulation, config.mixed_precision, config.class_weight, config.checkpoint_steps) == (
        2,
        "bfloat16",
        "balanced",
        10,
    )


def test_defaults_keep_the_previous_behaviour():
    config = RunConfig()
    assert (config.gradient_accumulation, config.mixed_precision, config.class_weight, config.checkpoint_steps) == (
        1,
        "auto",
        "none",
        0,
    )


def test_xla_is_used_on_gpus_unless_the_config_says_otherwise(monkeypatch):
    import tensorflow as tf

    from mmkeras.training.training_loop import use_xla

    assert RunConfig().jit_compile is None
    for gpus, expected in (([], False), (["GPU:0"], True)):
        monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind, gpus=gpus: gpus if kind == "GPU" else [])
        assert use_xla(None) is expected
        assert use_xla(True) is True and use_xla(False) is False


@pytest.mark.parametrize("name", ["learning_rate", "dropout", "weight_decay", "new_layers_lr_scale", "warmup_fraction"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_every_float_setting_must_be_finite(name, value):
    with pytest.raises(UserError, match=f"^{name} must be a finite number, got"):
        RunConfig(**{name: value})


@pytest.mark.parametrize("name, value", [("epochs", "3"), ("batch_size", 2.5), ("dropout", True), ("seed", None)])
def test_numbers_of_the_wrong_type_are_named(name, value):
    with pytest.raises(UserError, match=f"^{name} must be a number, got"):
        RunConfig(**{name: value})


def test_max_image_pixels_is_a_positive_setting():
    assert RunConfig().max_image_pixels == 40_000_000
    with pytest.raises(UserError, match="max_image_pixels must be at least 1"):
        RunConfig(max_image_pixels=0)


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_the_seed_is_a_32_bit_unsigned_number(seed):
    with pytest.raises(UserError, match="seed must be between 0 and 4294967295"):
        RunConfig(seed=seed)
