"""`export_dual_encoder`: an align run to a bundle of two encoders for on-device search.

```
BUNDLE_DIR/
  bundle.json          kind "dual_encoder": the encoders' files, embedding width, labels, conversion report
  text_encoder.tflite  token_ids, padding_mask -> text embedding [1, D]
  image_encoder.tflite image (0..255 RGB) -> image embedding [1, D]
  preprocessor.json, tokenizer.json   the same preprocessing as training
```

Each tower is converted on its own (`convert_model`, float or quantized like
a classifier bundle, `--integer-only` and `int16x8` too) with its projection,
so the device embeds a text without an image and the other way round. A float
or dynamic tower ends with its L2 normalisation; one with quantized
activations (int8, int16x8) ends at the projection and leaves the
normalisation to the reader, which normalises every embedding anyway
(`Embedder`). Under `int8` the text
encoder gets int8 weights with float activations (`dynamic`): with int8
activations too its embeddings fell to a cosine of 0.980 to the float ones
and recall@1 by 2-3 points, whatever ops were kept float; with float
activations the cosine is 1.0000, at 0.94x the size
(docs/design.md#alignment-before-matching). `--integer-only` makes both
encoders int8 with uint8 image and embedding tensors, since an integer-only
accelerator needs every op integer (docs/design.md#dual-encoders-integer-only-and-int16x8).
The report compares
each encoder's embeddings with the Keras model's on up to 32 rows of the run's
validation (else training) pairs: the mean and lowest cosine.

Example:
>>> report = export_dual_encoder(load_run("runs/align"), "bundles/align-int8", quantize="int8")  # doctest: +SKIP
>>> report["parity"]["image_encoder"]["mean_cosine"]                                            # doctest: +SKIP
0.998
"""

import json
from pathlib import Path

import keras
import numpy as np

from mmkeras.atomic_files import write_json_atomically
from mmkeras.errors import UserError
from mmkeras.export.bundle_writer import bundle_header
from mmkeras.export.conversion_report import op_summary
from mmkeras.export.integer_only import check_integer_only
from mmkeras.export.litert_conversion import (
    CALIBRATION_ROWS,
    FLOAT_OPS_IN_INT8,
    PARITY_ROWS,
    convert_model,
    manifest_inputs,
)
from mmkeras.models.dual_encoder import IMAGE_EMBEDDING, TEXT_EMBEDDING, TEXT_INPUTS, encoders
from mmkeras.runs import METRICS_FILE
from mmkeras.runtime.bundle import BUNDLE_FILE, CALIBRATED_MODES, DUAL_ENCODER_KIND, ENCODER_FILES
from mmkeras.runtime.embedder import Embedder
from mmkeras.staged_folder import staged_folder

# Each tower's final layer, the L2 normalisation an encoder with quantized activations leaves to the reader.
EMBEDDING_LAYERS = {"text_encoder": TEXT_EMBEDDING, "image_encoder": IMAGE_EMBEDDING}


def export_dual_encoder(
    run, out_dir, *, quantize: str = "none", calibration_data=None, integer_only: bool = False
) -> dict:
    """Write `run`'s text and image encoders as a dual-encoder bundle (replacing one in `out_dir`).

    Args:
        run: a loaded align run (`load_run`).
        out_dir: the bundle folder to write.
        quantize: `none`, `float16`, `dynamic`, `int8` or `int16x8`.
        calibration_data: for int8 and int16x8, a manifest of pairs whose
            rows calibrate the activation ranges (default: the run's training
            pairs).
        integer_only: with int8, both encoders fully int8 with uint8 image
            and embedding tensors (`convert_model(integer_only=True)`);
            refused, before anything is written, if an op stays float.

    Returns:
        The conversion report (also bundle.json's `conversion`) plus `path`.
    """
    out_dir = Path(out_dir)
    sample_path = calibration_data or run.config.data
    if not sample_path or not Path(sample_path).is_file():
        raise UserError("a dual-encoder export needs pairs to check (and calibrate) on: give --calibration-data",
                        path=run.path)
    sample = manifest_inputs(run, sample_path, CALIBRATION_ROWS)
    parity_path = run.config.val if run.config.val and Path(run.config.val).is_file() else sample_path
    parity_inputs = manifest_inputs(run, parity_path, PARITY_ROWS)
    towers = _towers(run.model)
    modes = encoder_quantization(quantize, integer_only)
    converted = {
        name: convert_model(
            _projection_tower(tower, EMBEDDING_LAYERS[name]) if modes[name] in CALIBRATED_MODES else tower,
            quantize=modes[name],
            representative_inputs=[sample] if modes[name] in CALIBRATED_MODES else None,
            keep_float=() if integer_only else FLOAT_OPS_IN_INT8, integer_only=integer_only,
        )
        for name, tower in towers.items()
    }
    if integer_only:
        for tflite_model in converted.values():
            check_integer_only(tflite_model)
    with staged_folder(out_dir) as staging:
        for name, tflite_model in converted.items():
            (staging / ENCODER_FILES[name]).write_bytes(tflite_model)
        run.preprocessor.save(staging)
        bundle = {
            **bundle_header(),
            "kind": DUAL_ENCODER_KIND,
            "encoders": ENCODER_FILES,
            "embedding_dim": int(run.config.embedding_dim),
            "labels": run.labels,
            "quantization": quantize,
            "encoder_quantization": modes,
            "preprocessing": run.preprocessor.get_config(),
            "source_run": str(Path(run.path).resolve()),
            "alignment": alignment_figures(run.path),
        }
        write_json_atomically(staging / BUNDLE_FILE, bundle)
        # Parity reads the bundle back as the device does, then the report joins bundle.json.
        report = {
            "quantize": quantize,
            "integer_only": integer_only,
            "encoders": {
                name: {"quantize": modes[name], "size_bytes": len(model), "ops": op_summary(model)}
                for name, model in converted.items()
            },
            "parity": _parity(towers, staging, parity_inputs),
        }
        write_json_atomically(staging / BUNDLE_FILE, {**bundle, "conversion": report})
    return {"path": str(out_dir), **report}


def alignment_figures(run_dir) -> dict | None:
    """The align run's validation figures that `search` checks its results against, or `None` without `--val`."""
    path = Path(run_dir) / METRICS_FILE
    metrics = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    if "val_recall_chance" not in metrics:
        return None
    return {name: metrics[name] for name in ("val_recall", "val_recall_chance", "val_pair_similarity")}


def encoder_quantization(quantize: str, integer_only: bool = False) -> dict[str, str]:
    """How each encoder is quantized for a bundle's `quantize` mode.

    int8: the text encoder's weights only (its int8 activations cost recall),
    unless `integer_only`, where an accelerator needs every op integer.
    """
    text = "dynamic" if quantize == "int8" and not integer_only else quantize
    return {"text_encoder": text, "image_encoder": quantize}


def describe_dual_encoder_report(report: dict) -> str:
    """The dual-encoder conversion report in a few lines."""
    mode = f"{report['quantize']}, integer-only" if report["integer_only"] else report["quantize"]
    lines = [f"wrote {report['path']} (dual encoder, {mode})"]
    for name, facts in report["encoders"].items():
        compute = facts["ops"]["compute_ops"]
        parity = report["parity"][name]
        lines.append(
            f"{name} ({facts['quantize']}): {facts['size_bytes']} bytes, "
            f"compute ops {compute['int8']} int8 / {compute['int16x8']} int16x8 / {compute['hybrid']} hybrid / "
            f"{compute['float']} float of {compute['total']}; "
            f"cosine to Keras on {parity['rows']} rows: "
            f"mean {parity['mean_cosine']:.4f}, min {parity['min_cosine']:.4f}"
        )
    return "\n".join(lines)


def _towers(model: keras.Model) -> dict[str, keras.Model]:
    """The text and image encoders, each with named (dict) inputs as `convert_model` wants."""
    text_encoder, image_encoder = encoders(model)
    image_input = {"image": image_encoder.input}
    return {
        "text_encoder": text_encoder,
        "image_encoder": keras.Model(image_input, image_encoder.output, name="image_encoder"),
    }


def _projection_tower(tower: keras.Model, embedding_layer: str) -> keras.Model:
    """`tower` without its final L2 normalisation (`embedding_layer`): an encoder with quantized activations.

    In such a graph the normalisation only costs precision (int8 has no SQUARE kernel; in int16x8 the lowest
    cosine to the Keras tower fell to 0.957, 0.9999 without it), and every reader L2-normalises the
    dequantized embedding anyway (`Embedder`, docs/bundle.md).
    """
    return keras.Model(tower.input, tower.get_layer(embedding_layer).input, name=tower.name)


def _parity(towers: dict, bundle_dir: Path, inputs: dict) -> dict:
    """Mean and lowest cosine between the bundle's and the Keras towers' embeddings of the same rows."""
    embedder = Embedder(bundle_dir, unfinished_ok=True)  # the staging folder, before it is renamed into place
    device = {
        "text_encoder": embedder.encode_tokens(inputs["token_ids"], inputs["padding_mask"]),
        "image_encoder": embedder.encode_pixels(inputs["image"]),
    }
    feeds = {
        "text_encoder": {name: inputs[name] for name in TEXT_INPUTS},
        "image_encoder": {"image": inputs["image"]},
    }
    parity = {}
    for name, tower in towers.items():
        cosine = np.sum(device[name] * np.asarray(tower(feeds[name])), axis=1)
        parity[name] = {
            "rows": int(len(cosine)),
            "mean_cosine": round(float(cosine.mean()), 6),
            "min_cosine": round(float(cosine.min()), 6),
        }
    return parity
