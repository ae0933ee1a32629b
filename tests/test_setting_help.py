"""The help of every option that sets a RunConfig field is the field's own (`mmkeras.config.setting`), written once."""

import dataclasses

import typer.main

from mmkeras.cli.app import app
from mmkeras.config import RunConfig, setting_help

# Options whose command says more than the setting's own help (their text is the command's).
COMMAND_HELP = {
    ("cv", "epochs"), ("cv", "seed"), ("cv", "on_bad_row"), ("align", "batch_size"), ("align", "on_bad_row"),
}  # fmt: skip
# The commands that fill a RunConfig from their options (`qat` sets QATSettings; predict's --on-bad-row is its own).
RUN_COMMANDS = {"train", "cv", "align"}


def run_config_options():
    """`(command, field, option help)` of every option named after a RunConfig field with a help text."""
    helped = {field.name for field in dataclasses.fields(RunConfig) if "help" in field.metadata}
    for name, command in typer.main.get_command(app).commands.items():
        if name not in RUN_COMMANDS:
            continue
        for parameter in command.params:
            if parameter.name in helped:
                yield name, parameter.name, parameter.help


def test_run_config_options_show_the_fields_help():
    options = list(run_config_options())
    assert {field for _, field, _ in options} >= {"epochs", "task", "strategy", "checkpoint_steps", "data_service"}
    for command, field, shown in options:
        if (command, field) not in COMMAND_HELP:
            assert shown == setting_help(field), (command, field)
    assert dict(((command, field), shown) for command, field, shown in options)[("train", "task")] == (
        "classify; match: does the text fit the image (2 labels); multilabel: label cells like a|b."
    )


def test_every_field_with_a_help_text_is_an_option():
    offered = {field for _, field, _ in run_config_options()}
    helped = {field.name for field in dataclasses.fields(RunConfig) if "help" in field.metadata}
    assert helped == offered
