"""Benchmark: can an align run's text encoder be fully int8 and keep its embeddings (cosine >= 0.99)?

Converts the text tower of an align run in several ways and compares each one's embeddings of the
validation pairs' texts with the float Keras tower's: mean and lowest cosine, and recall@1 both ways
against the float image embeddings (the image tower is left float here, to isolate the text tower).

- `dynamic`: int8 weights, float activations (what `export --quantize int8` ships for the text tower).
- `ptq_int8_200`: post-training full int8, ranges calibrated on 200 training pairs (the export's default).
- `ptq_int8_all`: the same, calibrated on every training pair.
- `qat_int8`: the project's QAT transform on the text tower (`quantize_model`, ranges calibrated on the
  training texts), fine-tuned for `--qat-steps` Adam steps to give the float tower's embeddings
  (distillation: 1 - cosine to the float embedding of the same text), then converted to full int8.

Prints one JSON object. A benchmark, not a test: nothing is asserted.

Usage:
    python benchmarks/int8_text_encoder.py --run runs/align --pairs samples/matching/val_pairs.csv
"""

import argparse
import json
import sys

import numpy as np


def cosine_figures(embeddings: np.ndarray, reference: np.ndarray) -> dict:
    cosine = np.sum(embeddings * reference, axis=1) / (
        np.linalg.norm(embeddings, axis=1) * np.linalg.norm(reference, axis=1))
    return {"mean_cosine": round(float(cosine.mean()), 4), "min_cosine": round(float(cosine.min()), 4)}


def recall_at_1(texts: np.ndarray, images: np.ndarray, groups: np.ndarray) -> dict:
    """Recall@1 text->image and image->text: the best match shares the row's label (its concept)."""
    similarity = texts @ images.T
    return {"text_to_image": round(float(np.mean(groups[similarity.argmax(axis=1)] == groups)), 4),
            "image_to_text": round(float(np.mean(groups[similarity.argmax(axis=0)] == groups)), 4)}


def distilled_qat_tower(text_encoder, train_feeds: dict, steps: int, learning_rate: float, batch: int = 32):
    """The QAT text tower, fine-tuned to reproduce the float tower's embeddings of the training texts."""
    import keras
    import tensorflow as tf

    from mmkeras.quantization.qat_transform import calibrate_ranges, quantize_model

    targets = tf.constant(np.asarray(text_encoder(train_feeds)))
    qat = quantize_model(text_encoder, on_unknown="warn")
    calibrate_ranges(qat, [train_feeds])
    optimizer = keras.optimizers.Adam(learning_rate)
    rows = len(targets)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        chosen = rng.choice(rows, min(batch, rows), replace=False)
        feeds = {name: tf.constant(value[chosen]) for name, value in train_feeds.items()}
        with tf.GradientTape() as tape:
            embedded = qat(feeds, training=True)
            loss = tf.reduce_mean(1.0 - tf.reduce_sum(tf.math.l2_normalize(embedded, -1)
                                                      * tf.gather(targets, chosen), axis=-1))
        variables = qat.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return qat


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="an align run")
    parser.add_argument("--pairs", required=True, help="labelled validation pairs")
    parser.add_argument("--qat-steps", type=int, default=300)
    parser.add_argument("--qat-learning-rate", type=float, default=1e-4)
    args = parser.parse_args(argv)
    from mmkeras.data.manifest import read_manifest
    from mmkeras.export.conversion_report import op_summary
    from mmkeras.export.litert_conversion import convert_model, manifest_inputs
    from mmkeras.models.dual_encoder import TEXT_INPUTS, encoders
    from mmkeras.quantization.run_loading import load_run
    from mmkeras.runtime.interpreter import LiteRTModel

    run = load_run(args.run)
    text_encoder, image_encoder = encoders(run.model)
    pairs = read_manifest(args.pairs)
    groups = np.asarray(pairs.encode_labels(pairs.labels()))
    val = run.preprocessor([row.text for row in pairs.rows], [row.image for row in pairs.rows])
    val_text = {name: val[name] for name in TEXT_INPUTS}
    float_text, float_image = np.asarray(text_encoder(val_text)), np.asarray(image_encoder(val["image"]))
    train_rows = len(read_manifest(run.config.data).rows)
    calibration = {
        "200": manifest_inputs(run, run.config.data, 200),
        "all": manifest_inputs(run, run.config.data, train_rows),
    }
    text_only = {key: {name: value[name] for name in TEXT_INPUTS} for key, value in calibration.items()}
    variants = {
        "dynamic": lambda: convert_model(text_encoder, quantize="dynamic"),
        "ptq_int8_200": lambda: convert_model(text_encoder, quantize="int8", representative_inputs=[text_only["200"]]),
        "ptq_int8_all": lambda: convert_model(text_encoder, quantize="int8", representative_inputs=[text_only["all"]]),
        "qat_int8": lambda: convert_model(
            distilled_qat_tower(text_encoder, text_only["all"], args.qat_steps, args.qat_learning_rate),
            quantize="int8", representative_inputs=[text_only["all"]]),
    }
    figures = {"float": {"recall_at_1": recall_at_1(float_text, float_image, groups)}}
    for name, convert in variants.items():
        print(f"converting {name}", file=sys.stderr)
        tflite_model = convert()
        embedded = LiteRTModel(tflite_model)(val_text)
        ops = op_summary(tflite_model)
        figures[name] = {**cosine_figures(embedded, float_text), "size_bytes": len(tflite_model),
                         "recall_at_1": recall_at_1(embedded, float_image, groups),
                         "compute_ops": ops["compute_ops"], "float_ops": ops["float_ops"]}
    print(json.dumps({"run": str(args.run), "rows": len(pairs.rows), "calibration_rows": train_rows,
                      "qat_steps": args.qat_steps, **figures}, indent=2))


if __name__ == "__main__":
    main()
