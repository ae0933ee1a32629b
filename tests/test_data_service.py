"""Training input through the tf.data service: one dispatcher and two workers on 127.0.0.1 give the local batches."""

import json
import os
import select
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
import yaml
from PIL import Image

from mmkeras import compat
from mmkeras.cli.app import main
from mmkeras.data.data_service import DataServiceEpochs, decode_image_row, image_settings
from mmkeras.data.dataset import EpochDatasets
from mmkeras.data.service_address import parse_address
from mmkeras.errors import UserError
from tests.helpers.dataset_rows import IMAGE_SIZE, labels_of
from tests.helpers.training_runs import ENTRY, free_ports, max_difference, run, run_weights, train_args, write_data

START_TIMEOUT_S = 120  # a server prints its line once TensorFlow has loaded (seconds on a busy 2-core machine)


def start_server(*args: str) -> subprocess.Popen:
    """`mmkeras data-service ARGS` in a child process, returned once it printed where it listens."""
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen(
        [sys.executable, "-c", ENTRY, "data-service", *args],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        if select.select([process.stdout], [], [], 1.0)[0]:
            line = process.stdout.readline()
            assert "listening on" in line, line
            return process
    process.kill()
    raise AssertionError(f"mmkeras data-service {' '.join(args)} did not start")


def stop_servers(processes: list[subprocess.Popen]) -> list[int]:
    """Stop the servers as Ctrl-C would (SIGTERM is handled the same), killing any that hang; their exit codes."""
    for process in processes:
        process.terminate()
    codes = []
    for process in processes:
        try:
            codes.append(process.wait(timeout=30))
        except subprocess.TimeoutExpired:
            process.kill()
            codes.append(process.wait())
    return codes


@pytest.fixture(scope="module")
def service():
    """A dispatcher and two workers on 127.0.0.1, as `mmkeras data-service` starts them; always stopped."""
    dispatcher_port, *worker_ports = free_ports(3)
    servers = [start_server("dispatcher", "--port", str(dispatcher_port))]
    try:
        dispatcher = f"127.0.0.1:{dispatcher_port}"
        for port in worker_ports:
            worker = ("worker", "--dispatcher", dispatcher, "--port", str(port), "--host", "127.0.0.1")
            servers.append(start_server(*worker))
        yield f"grpc://127.0.0.1:{dispatcher_port}"
    finally:
        codes = stop_servers(servers)
    assert codes == [0, 0, 0], "Ctrl-C is how a server's run ends: exit 0"


HUNG_SERVER = """
import time
from mmkeras.cli.app import serve_until_interrupted

class HungServer:  # a server whose stop() never returns, as a tf.data worker's once did
    def stop(self):
        time.sleep(3600)

serve_until_interrupted(HungServer(), "serving", stop_seconds=2)
"""


def test_ctrl_c_ends_a_server_whose_stop_hangs_with_exit_0():
    process = subprocess.Popen([sys.executable, "-c", HUNG_SERVER], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        assert process.stdout.readline().strip() == "serving"
        process.terminate()
        code = process.wait(timeout=60)  # the stop bound is 2 s; without it the process outlives the signal
    finally:
        process.kill()
    assert code == 0
    assert "stopped (not cleanly within 2 s)" in process.stderr.read()


def test_an_address_is_host_and_port():
    assert parse_address("grpc://10.0.0.5:5050", "--data-service") == ("10.0.0.5", 5050)
    assert parse_address("trainer-1.local:80", "--dispatcher") == ("trainer-1.local", 80)
    assert parse_address("[::1]:5050", "--dispatcher") == ("[::1]", 5050)
    for bad in ("grpc://host", "host:0", "host:70000", "http://host:80", "host:80/path", ""):
        with pytest.raises(UserError, match="HOST:PORT"):
            parse_address(bad, "--data-service")


@pytest.mark.parametrize("command", [[], ["dispatcher"], ["worker"]])
def test_the_data_service_help_has_an_example(command, capsys):
    assert main(["data-service", *command, "--help"]) == 0
    assert "Example: mmkeras data-service " in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, reason",
    [
        (["worker", "--dispatcher", "nohost", "--port", "5051"], "--dispatcher must be grpc://HOST:PORT"),
        (["worker", "--dispatcher", "127.0.0.1:5050", "--port", "0"], "--port must be a port in 1..65535"),
        (["dispatcher", "--port", "70000"], "--port must be a port in 0..65535"),
    ],
)
def test_a_bad_address_is_one_line_and_exit_2(args, reason, capsys):
    assert main(["data-service", *args]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and reason in error, error


def test_train_refuses_a_bad_data_service_address(capsys):
    assert main(["train", "--data", "samples/train.csv", "--out", "unused", "--data-service", "grpc://host"]) == 2
    assert "--data-service must be grpc://HOST:PORT" in capsys.readouterr().err


def test_a_dispatcher_that_does_not_answer_is_a_user_error(manifest, preprocessor):
    (port,) = free_ports(1)
    with pytest.raises(UserError, match=f"no tf.data service dispatcher answers at grpc://127.0.0.1:{port}"):
        DataServiceEpochs(
            manifest, labels_of(manifest), preprocessor, batch_size=4, seed=0, service=f"127.0.0.1:{port}"
        )


def test_a_function_under_a_fixed_token_runs_in_a_traced_graph():
    """What a worker relies on: `compat.register_py_function` makes the token callable from a graph."""
    compat.register_py_function("mmkeras.tests.double", lambda value: value * 2)
    value = tf.constant(21, tf.int64)
    double = tf.function(
        lambda: tf.raw_ops.PyFuncStateless(input=[value], token="mmkeras.tests.double", Tout=[tf.int64])
    )
    assert double()[0].numpy() == 42


def test_the_workers_decoder_loads_what_the_preprocessor_loads(tmp_path, preprocessor):
    """A photo (large enough for any reduced-size decoding to apply) and a missing image, as the trainer has them."""
    photo = tmp_path / "photo.jpg"
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (1500, 2000, 3), dtype=np.uint8)).save(photo, quality=92)
    settings = json.dumps(image_settings(preprocessor)).encode()
    pixels, present = decode_image_row(os.fsencode(photo), settings)
    expected, expected_present = preprocessor.load_images([str(photo)])
    assert pixels.dtype == np.uint8 and np.array_equal(pixels, expected[0]) and present == expected_present[0] == 1
    pixels, present = decode_image_row(b"", settings)
    assert pixels.shape == (*IMAGE_SIZE, 3) and not pixels.any() and present == 0


@pytest.mark.distributed
def test_two_workers_build_the_local_batches_in_the_local_order(service, manifest, preprocessor):
    """Exact: every batch equals `EpochDatasets`' (photo augmentation on), so every row comes once per epoch."""
    labels = labels_of(manifest)
    settings = {"batch_size": 3, "seed": 5, "augment": "photo"}
    local = EpochDatasets(manifest, labels, preprocessor, **settings)
    remote = DataServiceEpochs(manifest, labels, preprocessor, service=service, **settings)
    for epoch in range(2):
        local_batches, remote_batches = list(local.for_epoch(epoch)), list(remote.for_epoch(epoch))
        assert len(remote_batches) == len(local_batches) == 4
        for (local_inputs, local_labels), (inputs, batch_labels) in zip(local_batches, remote_batches, strict=True):
            assert np.array_equal(batch_labels, local_labels)
            for name, value in local_inputs.items():
                assert np.array_equal(inputs[name], value), name
        seen = np.concatenate([batch_labels for _, batch_labels in remote_batches])
        assert sorted(seen.tolist()) == list(range(10))  # each row (its own label) once


@pytest.mark.distributed
def test_training_through_the_service_equals_local_training(service, tmp_path):
    (tmp_path / "data").mkdir()
    data = write_data(tmp_path / "data")
    local = run(train_args(data, tmp_path / "local"))
    served = run(train_args(data, tmp_path / "served", "--data-service", service))
    assert yaml.safe_load((tmp_path / "served" / "config.yaml").read_text())["data_service"] == service
    assert served["loss"] == local["loss"]
    assert max_difference(run_weights(tmp_path / "served"), run_weights(tmp_path / "local")) == 0.0
