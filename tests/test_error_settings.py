"""A setting's error carries the setting it is in, and the CLI names it by the flag the user typed.

The CLI used to find the setting by reading the first word of the message;
now `UserError.setting` says it, wherever the error is raised.
"""

import pytest
from test_cli_end_to_end import run_cli  # pytest puts tests/ on sys.path

from mmkeras.config import RunConfig
from mmkeras.errors import UserError


@pytest.mark.parametrize(
    "overrides, setting",
    [
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"fusion": "sum"}, "fusion"),
        ({"epochs": 0}, "epochs"),
        ({"seed": -1}, "seed"),
        ({"dropout": float("nan")}, "dropout"),
        ({"cache_features": True}, "cache_features"),  # needs frozen backbones: a rule across settings
    ],
)
def test_a_config_error_carries_its_setting_and_names_it_first(overrides, setting):
    with pytest.raises(UserError) as caught:
        RunConfig(**overrides)
    assert caught.value.setting == setting
    assert str(caught.value) == f"{setting} {caught.value.reason}"


def test_naming_the_setting_keeps_the_file_line_and_reason():
    error = UserError("must be positive, got 0", path="run.yaml", row=3, setting="learning_rate")
    renamed = error.naming_setting("--learning-rate")
    assert str(renamed) == "run.yaml: line 3: --learning-rate must be positive, got 0"
    assert (renamed.reason, renamed.path, renamed.row) == (error.reason, error.path, error.row)


def test_a_flag_is_named_by_its_flag_and_a_config_file_setting_by_its_key(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "--data", "x.csv", "--out", "run", "--cache-features")
    assert code == 2 and err.startswith("error: --cache-features needs frozen backbones")
    config = tmp_path / "run.yaml"
    config.write_text("cache_features: true\n", encoding="utf-8")
    code, _, err = run_cli(capsys, "train", "--config", config, "--data", "x.csv", "--out", "run", "--epochs", "2")
    assert code == 2 and err.startswith("error: cache_features needs frozen backbones")
