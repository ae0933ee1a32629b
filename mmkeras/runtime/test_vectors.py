"""Test vectors: a bundle's own examples, so a port to another platform can check itself.

Every export writes `test_vectors.json` into the bundle, and copies the image
files it names into `test_vectors/`. Each vector holds the raw text, the image
file (path in the bundle and sha256 of its bytes), the token ids and padding
mask, a checksum of the float32 pixel tensor (sum, and sha256 of its
little-endian bytes), the modality mask and the logits and label the Python
runtime gives (for a multilabel bundle also `labels`, the label set at the
bundle's thresholds). A Kotlin, Swift or JavaScript port feeds the same text and image
file through its own preprocessing and model and compares, step by step:
token ids exactly, pixels by their sum (sha256 only matches a bit-identical
decoder and resizer), logits within `logit_tolerance`, labels exactly.

`verify_bundle` runs those checks with the Python runtime itself (a bundle
that still gives its own answers after a copy, an upgrade of ai-edge-litert or
of Pillow). The file's layout is checked against `test_vectors.schema.json`.
This module is TensorFlow-free.

Example:
>>> write_test_vectors("bundles/demo", [("a calm blue card", "card.png"), (None, "card.png")])  # doctest: +SKIP
>>> verify_bundle("bundles/demo")["passed"]  # doctest: +SKIP
True
"""

import hashlib
import json
import shutil
from pathlib import Path

import jsonschema
import numpy as np

from mmkeras import compat
from mmkeras.atomic_files import write_json_atomically
from mmkeras.data.manifest import read_manifest
from mmkeras.errors import UserError
from mmkeras.preprocessing.multimodal_preprocessor import is_present
from mmkeras.runtime import interpreter
from mmkeras.runtime.benchmark import SAMPLE_TEXT, noise_image_bytes
from mmkeras.runtime.bundle import CALIBRATED_MODES, TEST_VECTORS_FILE, TEST_VECTORS_FOLDER
from mmkeras.runtime.predictor import Predictor

TEST_VECTORS_FORMAT = 1
SCHEMA_PATH = Path(__file__).with_name("test_vectors.schema.json")
# Float kernels of two LiteRT builds (XNNPACK, WASM, GPU-less ARM) agree to
# about 1e-5 on these models; 1e-4 leaves room without hiding a wrong input.
FLOAT_LOGIT_TOLERANCE = 1e-4


def pixel_checksum(pixels: np.ndarray) -> dict:
    """`sum` (float64) and `sha256` of an image tensor's float32 little-endian bytes.

    Example:
    >>> pixel_checksum(np.zeros((1, 2, 2, 3), np.float32))["sum"]
    0.0
    """
    values = np.ascontiguousarray(pixels, dtype="<f4")
    return {"sum": float(values.sum(dtype=np.float64)), "sha256": hashlib.sha256(values.tobytes()).hexdigest()}


def logit_quantization_step(model_path: str | Path) -> float | None:
    """The step of a calibrated (int8, int16x8) model's quantized logits, else `None`.

    The logits are the output itself (integer-only), or dequantized into the float output.

    Two correct int8 runtimes may round one accumulator differently: their
    logits then differ by one step of the output's quantization.
    """
    model = interpreter.load_interpreter(str(model_path), default_delegates=False)
    tensors = {details["index"]: details for details in model.get_tensor_details()}
    output_index = model.get_output_details()[0]["index"]
    scale = tensors[output_index]["quantization"][0]
    if scale:  # an integer-only model outputs the quantized (uint8) logits themselves
        return float(scale)
    for op in compat.litert_ops_details(model):
        if op["op_name"] == "DEQUANTIZE" and output_index in op["outputs"]:
            scale = tensors[op["inputs"][0]]["quantization"][0]
            return float(scale) if scale else None
    return None


def logit_tolerance(bundle_dir: str | Path, quantization: str) -> float:
    """How far a correct port's logits may be from the recorded ones."""
    step = logit_quantization_step(Path(bundle_dir) / "model.tflite") if quantization in CALIBRATED_MODES else None
    return max(FLOAT_LOGIT_TOLERANCE, step or 0.0)


def write_test_vectors(
    bundle_dir: str | Path, examples: list[tuple[str | None, str | Path | bytes | None]], *, unfinished_ok=False
) -> dict:
    """Run `examples` through the bundle's Python runtime and record every step in `test_vectors.json`.

    Args:
        bundle_dir: a complete bundle folder (model, bundle.json, preprocessor).
        examples: `(text, image)` pairs, the image a file path or PNG bytes;
            `None` marks a missing modality. Each image is stored in the
            bundle's `test_vectors/`.
        unfinished_ok: accept an export's staging folder (the exporter writes
            the vectors before the bundle is renamed into place).

    Returns:
        The written content.

    Example:
    >>> write_test_vectors("bundles/demo", [("a calm blue card", "card.png")])["vectors"][0]["label"]  # doctest: +SKIP
    'blue_calm'
    """
    bundle_dir = Path(bundle_dir)
    predictor = Predictor(bundle_dir, num_threads=1, unfinished_ok=unfinished_ok)
    folder = bundle_dir / TEST_VECTORS_FOLDER
    folder.mkdir(exist_ok=True)
    vectors = []
    for number, (text, image) in enumerate(examples):
        bundled_image = None
        if isinstance(image, (bytes, bytearray)):
            bundled_image = f"{TEST_VECTORS_FOLDER}/{number:02d}.png"
            (bundle_dir / bundled_image).write_bytes(image)
        elif is_present(image):
            bundled_image = f"{TEST_VECTORS_FOLDER}/{number:02d}{Path(image).suffix.lower()}"
            shutil.copyfile(image, bundle_dir / bundled_image)
        vectors.append(record_vector(predictor, text if is_present(text) else None, bundle_dir, bundled_image))
    content = {
        "format": TEST_VECTORS_FORMAT,
        "quantization": predictor.bundle["quantization"],
        "logit_tolerance": logit_tolerance(bundle_dir, predictor.bundle["quantization"]),
        "vectors": vectors,
    }
    write_json_atomically(bundle_dir / TEST_VECTORS_FILE, content)
    return content


def record_vector(predictor: Predictor, text: str | None, bundle_dir: Path, image: str | None) -> dict:
    """One vector: the inputs, every intermediate tensor's check value and the prediction."""
    image_bytes = (bundle_dir / image).read_bytes() if image else None
    inputs = predictor.preprocessor([text], [image_bytes])
    [logits] = predictor.predict_inputs(inputs)
    label_set = {"labels": predictor.predicted_labels(predictor.scores(logits))} if predictor.multilabel else {}
    return {
        "text": text,
        "image": image,
        "image_sha256": hashlib.sha256(image_bytes).hexdigest() if image_bytes else None,
        "token_ids": inputs["token_ids"][0].tolist(),
        "padding_mask": inputs["padding_mask"][0].tolist(),
        "pixels": pixel_checksum(inputs["image"]),
        "modality_mask": inputs["modality_mask"][0].tolist(),
        "logits": [float(value) for value in logits],
        "label": predictor.labels[int(np.argmax(logits))],
        **label_set,
    }


def examples_from_manifest(
    path: str | Path | None, image_size: tuple[int, int], count: int = 3, *, columns: dict[str, str] | None = None
) -> list[tuple]:
    """Test-vector examples: `count` rows with both modalities, then the first as text only and as image only.

    Without a readable manifest (`path` is `None` or missing, or has no row
    with both), one sample sentence and a noise image stand in, so every
    bundle has vectors. `columns` names the manifest's columns (`read_manifest`).

    Example:
    >>> examples_from_manifest("samples/val.csv", (32, 32))[-1]  # doctest: +SKIP
    (None, PosixPath('samples/images/val/00001.png'))
    """
    if not (path and Path(path).is_file()):
        rows = []
    else:
        rows = read_manifest(path, require_labels=False, columns=columns).rows
    complete = [(row.text, row.image) for row in rows if row.text and row.image][:count]
    if not complete:
        complete = [(SAMPLE_TEXT, noise_image_bytes(*image_size))]
    text, image = complete[0]
    return [*complete, (text, None), (None, image)]


def read_test_vectors(bundle_dir: str | Path) -> dict:
    """`test_vectors.json` of a bundle, checked against `test_vectors.schema.json`."""
    path = Path(bundle_dir) / TEST_VECTORS_FILE
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"no {TEST_VECTORS_FILE}: export the bundle again with this mmkeras", path=path) from None
    except json.JSONDecodeError as error:
        raise UserError(f"invalid JSON: {error.msg}", path=path, row=error.lineno) from None
    try:
        jsonschema.validate(content, json.loads(SCHEMA_PATH.read_text(encoding="utf-8")))
    except jsonschema.ValidationError as error:
        where = "/".join(str(part) for part in error.absolute_path) or "the top level"
        raise UserError(f"malformed {TEST_VECTORS_FILE} at {where}: {error.message}", path=path) from None
    return content


def verify_bundle(bundle_dir: str | Path, *, num_threads: int | None = 1) -> dict:
    """Check that the Python runtime still reproduces a bundle's own test vectors.

    Args:
        bundle_dir: a bundle folder with `test_vectors.json`.
        num_threads: interpreter threads.

    Returns:
        `passed` (bool), `vectors` (how many) and `failures`: one line per
        mismatch, naming the vector and the step (image file, token ids,
        pixels, modality mask, label, logits).

    Example:
    >>> verify_bundle("bundles/demo")  # doctest: +SKIP
    {'passed': True, 'vectors': 5, 'failures': []}
    """
    bundle_dir = Path(bundle_dir)
    content = read_test_vectors(bundle_dir)
    predictor = Predictor(bundle_dir, num_threads=num_threads)
    failures = []
    for number, expected in enumerate(content["vectors"]):
        image = expected["image"]
        if image and hashlib.sha256((bundle_dir / image).read_bytes()).hexdigest() != expected["image_sha256"]:
            failures.append(f"vector {number}: {image} is not the file the vectors were made from")
            continue
        actual = record_vector(predictor, expected["text"], bundle_dir, image)
        failures += [f"vector {number}: {problem}" for problem in compare_vector(expected, actual, content)]
    return {"passed": not failures, "vectors": len(content["vectors"]), "failures": failures}


def compare_vector(expected: dict, actual: dict, content: dict) -> list[str]:
    """What differs between a recorded vector and a new run of it, step by step."""
    problems = [
        f"{key} {actual[key]} != {expected[key]}"
        for key in ("token_ids", "padding_mask", "modality_mask", "label", "labels")
        if actual.get(key) != expected.get(key)
    ]
    if actual["pixels"]["sha256"] != expected["pixels"]["sha256"]:
        problems.append(f"pixels differ (sum {actual['pixels']['sum']} != {expected['pixels']['sum']})")
    logit_error = float(np.max(np.abs(np.subtract(actual["logits"], expected["logits"]))))
    if logit_error > content["logit_tolerance"]:
        problems.append(f"logits differ by {logit_error:.3g} (tolerance {content['logit_tolerance']:.3g})")
    return problems
