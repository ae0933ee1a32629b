"""The CLI as a user meets it: help, version, fast user errors before TensorFlow, quiet logs, progress."""

import errno
import inspect
import json
import logging
import os
import re
import subprocess
import sys
import typing

import pytest

from mmkeras import __version__, config
from mmkeras.cli import app as cli_app
from mmkeras.cli import preflight
from mmkeras.config import RunConfig
from mmkeras.framework_logs import VERBOSE_ENV
from tests.helpers.cli import SAMPLES, run_cli, write_subset

COMMANDS = ("train", "evaluate", "qat", "export", "predict", "benchmark", "report", "web")
# What TensorFlow, absl and LiteRT write to stderr when nobody keeps them quiet.
# absl's C++ format is "E0000 00:00:1796484160.154871 12555 cuda_platform.cc:52] failed call to cuInit: ...".
FRAMEWORK_NOISE = re.compile(
    r"absl|^[IWEF]\d{4} |oneDNN|cudart|cuInit|XNNPACK|fully_quantize|tensorflow|WARNING:|INFO:|ERROR:", re.MULTILINE
)


def mmkeras(*argv) -> subprocess.CompletedProcess:
    """The console script's entry point in a fresh process."""
    code = "import sys; from mmkeras.cli.app import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *map(str, argv)], capture_output=True, text=True, timeout=300)


def test_mmkeras_alone_prints_the_help(capsys):
    code, out, err = run_cli(capsys)
    assert code == 0 and err == ""
    assert all(command in out for command in COMMANDS)


def test_version(capsys):
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and out.startswith(f"mmkeras {__version__} (Python ")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_has_an_example(command, capsys):
    code, out, _ = run_cli(capsys, command, "--help")
    assert code == 0
    assert f"Example: mmkeras {command} " in out


def test_train_help_shows_the_run_configs_defaults(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # no line breaks inside a default
    _, out, _ = run_cli(capsys, "train", "--help")
    flat = " ".join(out.split())
    for flag, field in (("--epochs", "epochs"), ("--batch-size", "batch_size"), ("--fusion", "fusion")):
        assert re.search(rf"{flag} .*?\[default: \(?{re.escape(str(getattr(RunConfig, field)))}\)?\]", flat), flag


def test_a_missing_manifest_is_one_line_before_tensorflow_is_imported(tmp_path):
    code = (
        "import sys; from mmkeras.cli.app import main; "
        f"code = main(['train', '--data', {str(tmp_path / 'nope.csv')!r}, '--out', {str(tmp_path / 'run')!r}]); "
        "print(code, 'tensorflow' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["2", "False"]
    assert result.stderr.splitlines() == [f"error: {tmp_path / 'nope.csv'}: manifest not found"]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--data", "{folder}", "--out", "{out}"], "must be a manifest file"),
        (["train", "--data", "{train}", "--out", "{file}"], "--out must be a folder"),
        (["qat", "{folder}", "--data", "{train}", "--out", "{out}"], "not a run folder"),
        (["export", "{folder}", "--out", "{out}"], "not a run folder"),
        (["evaluate", "{folder}", "--data", "{train}"], "not a run folder"),
        (["report", "{folder}"], "not a run folder"),
    ],
)
def test_user_errors_are_found_before_tensorflow(argv, message, tmp_path, capsys, monkeypatch):
    train = write_subset(SAMPLES / "train.csv", tmp_path / "train.csv", 4)
    (tmp_path / "a-file").write_text("not a folder")
    paths = {"folder": tmp_path, "out": tmp_path / "out", "train": train, "file": tmp_path / "a-file"}
    loaded = []
    monkeypatch.setattr("mmkeras.cli.app.load_tensorflow", lambda: loaded.append(True))
    code, out, err = run_cli(capsys, *(arg.format(**paths) for arg in argv))
    assert (code, out, loaded) == (2, "", [])
    assert len(err.splitlines()) == 1 and message in err


def test_a_bad_row_error_says_how_to_leave_it_out_where_the_command_can(tmp_path, capsys, monkeypatch, tiny_bundle):
    data = write_subset(SAMPLES / "train.csv", tmp_path / "data.csv", 4)
    lines = data.read_text().splitlines()
    data.write_text("\n".join([*lines, lines[1].rsplit(",", 1)[0] + ","]) + "\n")  # line 6: an empty label
    monkeypatch.setattr("mmkeras.cli.app.load_tensorflow", lambda: None)
    code, _, err = run_cli(capsys, "train", "--data", str(data), "--out", str(tmp_path / "run"))
    assert (code, err) == (2, f"error: {data}: line 6: empty label (--on-bad-row skip leaves bad rows out)\n")
    # predict keeps a bad row in its output, with the reason: its hint says so (it said "leaves bad rows out").
    new_rows = tmp_path / "new.csv"
    new_rows.write_text("text,image\na photo that is not there,missing.jpg\n", encoding="utf-8")
    code, _, err = run_cli(capsys, "predict", str(tiny_bundle["bundle"]), "--data", str(new_rows), "--out",
                           str(tmp_path / "predictions.csv"))
    [error] = [line for line in err.splitlines() if not line.startswith("predicting: ")]
    assert code == 2 and error == (f"error: {new_rows}: line 2: cannot read image 'missing.jpg': file not found "
                                   "(--on-bad-row skip predicts the others and writes bad rows with the reason)")
    # evaluate scores every row: it has no such option, so no such hint.
    code, _, err = run_cli(capsys, "evaluate", str(tiny_bundle["bundle"]), "--data", str(data))
    assert (code, err) == (2, f"error: {data}: line 6: empty label\n")


@pytest.mark.parametrize("command", ["train", "qat", "export", "report"])
def test_training_commands_name_the_extra_when_it_is_missing(command, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(preflight, "TRAINING_MODULES", ("a_module_that_is_not_installed",))
    monkeypatch.setattr(preflight, "check_run_folder", lambda path: RunConfig())
    train = write_subset(SAMPLES / "train.csv", tmp_path / "train.csv", 4)
    argv = {
        "train": ["train", "--data", train, "--out", tmp_path / "run"],
        "qat": ["qat", tmp_path, "--data", train, "--out", tmp_path / "qat"],
        "export": ["export", tmp_path, "--out", tmp_path / "bundle"],
        "report": ["report", tmp_path],
    }[command]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert err.splitlines() == [
        f"error: `mmkeras {command}` needs the training extra (a_module_that_is_not_installed not installed): "
        'pip install "mmkeras[train]"'
    ]


def test_resume_is_an_argument_not_a_setting(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("resume: true\n")
    code, _, err = run_cli(capsys, "train", "--config", config, "--data", "x.csv", "--out", tmp_path / "run")
    assert code == 2 and "resume is not a setting" in err


def test_repeated_calls_do_not_repeat_log_lines(capsys):
    for _ in range(3):
        run_cli(capsys, "--version")
    logging.getLogger("mmkeras").info("said once")
    assert capsys.readouterr().err == "said once\n"


@pytest.mark.slow
def test_train_json_shows_progress_and_no_framework_logs(tmp_path, monkeypatch):
    monkeypatch.setenv("MMKERAS_CACHE_DIR", str(tmp_path / "cache"))  # images not checked before: a progress line
    train = write_subset(SAMPLES / "train.csv", tmp_path / "train.csv", 48)
    val = write_subset(SAMPLES / "val.csv", tmp_path / "val.csv", 16)
    run = tmp_path / "run"
    result = mmkeras(
        "train", "--data", train, "--val", val, "--out", run, "--epochs", "2", "--batch-size", "16", "--json"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["epochs_completed"] == 2
    lines = result.stderr.splitlines()
    assert [line for line in lines if FRAMEWORK_NOISE.search(line)] == []
    statuses = ("loading TensorFlow", "building the model", r"checking images: (\d+)/\1", "epoch 1/2: 3/3", "run saved")
    for status in statuses:
        assert any(re.search(status, line) for line in lines), status


# `mmkeras ARGV` in a fresh process that also writes, to the file argv[1], every line the `mmkeras` logger said:
# the lines that are mmkeras' own, to tell them from anything else on stderr.
RECORDING_OWN_LINES = """
import json, logging, sys
from mmkeras.cli.app import main

own_lines = []

class Recorder(logging.Handler):
    def emit(self, record):
        own_lines.extend(self.format(record).splitlines())

recorder = Recorder()
recorder.setFormatter(logging.Formatter("%(message)s"))
logging.getLogger("mmkeras").addHandler(recorder)
code = main(sys.argv[2:])
with open(sys.argv[1], "w") as handle:
    json.dump(own_lines, handle)
sys.exit(code)
"""


@pytest.mark.slow
@pytest.mark.parametrize("tf_cpp_min_log_level", ["unset", "unset", "0"])
def test_train_json_prints_no_line_that_is_not_mmkeras_own(tmp_path, tf_cpp_min_log_level):
    # The CUDA platform's cuInit line came in one run of two (the first device query's timing), so: several
    # fresh processes, and every stderr line must be one the `mmkeras` logger said, not only free of known noise.
    # A user's TF_CPP_MIN_LOG_LEVEL=0 lets TensorFlow's C++ log at INFO all through the command.
    train = write_subset(SAMPLES / "train.csv", tmp_path / "train.csv", 32)
    own_lines_file = tmp_path / "own_lines.json"
    argv = ["train", "--data", train, "--out", tmp_path / "run", "--epochs", "1", "--batch-size", "16", "--json"]
    env = {key: value for key, value in os.environ.items() if key not in (VERBOSE_ENV, "TF_CPP_MIN_LOG_LEVEL")}
    if tf_cpp_min_log_level != "unset":
        env["TF_CPP_MIN_LOG_LEVEL"] = tf_cpp_min_log_level
    result = subprocess.run(
        [sys.executable, "-c", RECORDING_OWN_LINES, own_lines_file, *map(str, argv)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["epochs_completed"] == 1
    own_lines = json.loads(own_lines_file.read_text())
    assert "loading TensorFlow" in own_lines
    assert result.stderr.splitlines() == own_lines


@pytest.mark.parametrize("verbose", [False, True])
def test_a_command_keeps_late_native_lines_off_stderr_unless_verbose(verbose):
    # A C++ line written to fd 2 at any time while a command runs (the CUDA platform's cuInit error comes from
    # the first device query, after the import's quiet window), beside mmkeras' own Python lines.
    code = (
        "import logging, os, sys\n"
        "from mmkeras.framework_logs import native_stderr_kept_off\n"
        "from mmkeras.progress import install_log_handler\n"
        "install_log_handler(logging.INFO)\n"
        "with native_stderr_kept_off():\n"
        "    os.write(2, b'E0000 00:00:1.5 1 cuda_platform.cc:52] failed call to cuInit\\n')\n"
        "    logging.getLogger('mmkeras').info('building the model')\n"
        "    print('a line of mine', file=sys.stderr)\n"
        "os.write(2, b'after the command\\n')\n"
    )
    env = {**os.environ, VERBOSE_ENV: "1" if verbose else "0"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert ("building the model" in lines, "a line of mine" in lines, "after the command" in lines) == (True,) * 3
    assert bool(FRAMEWORK_NOISE.search(result.stderr)) == verbose


@pytest.mark.parametrize("verbose", [False, True])
def test_tensorflow_import_logs_are_hidden_unless_verbose(verbose):
    code = "from mmkeras.framework_logs import import_tensorflow_quietly; import_tensorflow_quietly()"
    env = {**os.environ, VERBOSE_ENV: "1" if verbose else "0"}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0
    assert bool(FRAMEWORK_NOISE.search(result.stderr)) == verbose


def test_train_offers_exactly_the_configs_choices():
    def literal_choices(annotation):
        for argument in typing.get_args(annotation):  # Optional[Literal[...]]
            if typing.get_origin(argument) is typing.Literal:
                return typing.get_args(argument)
        return None

    parameters = inspect.signature(cli_app.train).parameters.items()
    choices = {name: literal_choices(parameter.annotation) for name, parameter in parameters}
    assert {name: values for name, values in choices.items() if values} == {
        "fusion": config.FUSIONS,
        "on_bad_row": config.ON_BAD_ROW,
        "strategy": config.STRATEGIES,
        "freeze": config.FREEZE_CHOICES,
        "mixed_precision": config.MIXED_PRECISION,
        "class_weight": config.CLASS_WEIGHTS,
        "augment": config.AUGMENTATIONS,
        "modality_balance": config.MODALITY_BALANCE,
        "task": config.TASKS,
        "cache_dtype": config.CACHE_DTYPES,
    }


def test_a_full_disk_is_a_user_error_and_a_bug_is_an_internal_one(monkeypatch, capsys):
    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "runs/demo/model.keras")

    monkeypatch.setattr(cli_app, "app", full_disk)
    assert cli_app.main(["train"]) == 2
    assert capsys.readouterr().err == "error: runs/demo/model.keras: No space left on device\n"

    def panic(*args, **kwargs):
        raise type("PanicException", (BaseException,), {})("thread panicked\nat src/lib.rs")

    monkeypatch.setattr(cli_app, "app", panic)
    assert cli_app.main(["predict"]) == 1
    assert capsys.readouterr().err == (
        "internal error: PanicException: thread panicked at src/lib.rs (run with --debug for the traceback)\n"
    )


def test_json_output_has_no_nan_or_infinity(capsys):
    from mmkeras.cli.app import emit

    emit({"loss": float("nan"), "figures": [1.0, float("inf")], "nested": {"x": float("-inf")}}, True, "")
    assert json.loads(capsys.readouterr().out) == {"loss": None, "figures": [1.0, None], "nested": {"x": None}}


@pytest.mark.parametrize(
    "flag, value", [("--learning-rate", "nan"), ("--new-layers-lr-scale", "inf"), ("--epochs", "0")]
)
def test_a_bad_value_is_named_by_its_flag(flag, value, capsys):
    code, _, err = run_cli(capsys, "train", "--data", "x.csv", "--out", "run", flag, value)
    assert code == 2
    assert err.startswith((f"error: {flag} must be", f"error: Invalid value for '{flag}'"))


def test_a_one_epoch_run_ends_in_words_that_count_one(tmp_path, capsys):
    # Seen walking the guide with --epochs 1: "trained 1 epochs ... trained all 1 epochs".
    train = write_subset(SAMPLES / "train.csv", tmp_path / "train.csv", 16)
    val = write_subset(SAMPLES / "val.csv", tmp_path / "val.csv", 8)
    code, out, _ = run_cli(capsys, "train", "--data", train, "--val", val, "--out", tmp_path / "run",
                           "--epochs", "1", "--batch-size", "8")
    assert code == 0
    assert re.match(r"trained 1 epoch \(\d+\.\d s, peak memory \d[\d.]* [MG]B\): loss ", out), out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert 0.5e9 < metrics["peak_memory_bytes"] < 64e9  # TensorFlow alone is ~0.8 GB: bytes, not KiB
    assert out.rstrip().endswith("; trained the one epoch")
