"""Run folders without training: a random tiny model saved as `train` saves one, for export and runtime tests."""

from pathlib import Path

import numpy as np

from mmkeras import compat
from mmkeras.config import RunConfig
from mmkeras.data.manifest import read_manifest
from mmkeras.models import build_model
from mmkeras.runs import save_run
from mmkeras.runtime.interpreter import load_interpreter
from tests.helpers.cli import SAMPLES

SEQUENCE_LENGTH = 16


def save_tiny_run(run_dir: Path, model=None, preprocessor=None) -> Path:
    """A run folder for `samples/train.csv`, with a random tiny model unless one is given."""
    manifest = read_manifest(SAMPLES / "train.csv")
    labels = manifest.labels()
    if model is None:
        texts = [row.text for row in manifest.rows if row.text]
        model, preprocessor = build_model(
            num_classes=len(labels), texts=texts, sequence_length=SEQUENCE_LENGTH, seed=0
        )
    config = RunConfig(data=str(SAMPLES / "train.csv"), out=str(run_dir), sequence_length=SEQUENCE_LENGTH)
    save_run(run_dir, model=model, preprocessor=preprocessor, labels=labels, config=config)
    return run_dir


def int8_tensor_scales(model) -> dict[str, float]:
    """Each int8 tensor's (largest) quantization scale, by tensor name."""
    interpreter = load_interpreter(model, default_delegates=False)
    return {
        details["name"]: float(np.max(details["quantization_parameters"]["scales"]))
        for details in interpreter.get_tensor_details()
        if details["dtype"] == np.int8 and details["quantization_parameters"]["scales"].size
    }


def layer_norm_tail_dtypes(model) -> list[tuple[str, str]]:
    """(output dtype of the ADD feeding each RSQRT, output dtype of the RSQRT): a layer norm's `variance + epsilon`.

    Walked here from the op graph, independently of the export's own `layer_norm_tail_names`.
    """
    interpreter = load_interpreter(model, default_delegates=False)
    model_ops = compat.litert_ops_details(interpreter)
    producers = {index: op for op in model_ops for index in op["outputs"]}
    tails = []
    for op in model_ops:
        if op["op_name"] == "RSQRT":
            variance = producers[op["inputs"][0]]
            assert variance["op_name"] == "ADD", variance["op_name"]
            tails.append((np.dtype(variance["result_types"][0]).name, np.dtype(op["result_types"][0]).name))
    return tails
