"""float32, float16, dynamic, PTQ-int8 and QAT-int8 bundles of one run, side by side in one process.

For each bundle: test accuracy, label agreement with the float32 bundle, model
size (and its ratio to float32), latency p50 at 1 and 2 threads and its ratio
to float32's, the compute-op precision and the op types kept float
(`kept_float`) of the conversion report. Latency is the median over `--rounds`
rounds (3) that measure every bundle in turn (`--runs` timed runs each), so
that a busy spell of a shared machine does not fall on one bundle only. QAT-int8 is `qat_finetune`
(`mmkeras qat`) followed by `export --quantize int8`. Prints one JSON object on
stdout (progress on stderr); nothing is asserted.

Two configurations:

    # a trained run and its data (e.g. the samples run of samples/demo.sh)
    python benchmarks/qat_int8.py --run runs/samples --train samples/train.csv --test samples/test.csv
    # an edge-sized random model: BERT-tiny-like text (2 layers, hidden 128, vocabulary
    # 30522, sequence 64) + MobileNetV3-small-like vision (224x224) + cross-attention,
    # random weights and random data: only size, latency and agreement mean anything
    python benchmarks/qat_int8.py --edge
    # --workdir DIR keeps the runs and bundles; --latency-only DIR measures their latency again
    python benchmarks/qat_int8.py --latency-only DIR
"""

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from mmkeras.config import RunConfig
from mmkeras.data.manifest import read_manifest
from mmkeras.export.converter import export_bundle
from mmkeras.quantization.qat_settings import QATSettings
from mmkeras.quantization.qat_training import qat_finetune
from mmkeras.quantization.run_loading import load_run
from mmkeras.runs import save_run
from mmkeras.runtime.benchmark import benchmark_bundle
from mmkeras.runtime.predictor import Predictor

# Bundle name (also its folder in --workdir) -> export mode of the float run.
PTQ_BUNDLES = {"none": "none", "float16": "float16", "dynamic": "dynamic", "ptq-int8": "int8"}
LATENCY_ROUNDS = 3
EDGE_SEQUENCE_LENGTH = 64
EDGE_VOCABULARY_SIZE = 30522
# keras-hub MobileNetBackbone with MobileNetV3-small-like stages (its docstring's example).
EDGE_MOBILENET = dict(
    stackwise_expansion=[[40, 56], [64, 144, 144], [72, 72], [144, 288, 288]],
    stackwise_num_blocks=[2, 3, 2, 3],
    stackwise_num_filters=[[16, 16], [24, 24, 24], [24, 24], [48, 48, 48]],
    stackwise_kernel_size=[[3, 3], [5, 5, 5], [5, 5], [5, 5, 5]],
    stackwise_num_strides=[[2, 1], [2, 1, 1], [1, 1], [2, 1, 1]],
    stackwise_se_ratio=[[None, None], [0.25, 0.25, 0.25], [0.3, 0.3], [0.3, 0.25, 0.25]],
    stackwise_activation=[["relu", "relu"], ["hard_swish"] * 3, ["hard_swish"] * 2, ["hard_swish"] * 3],
    stackwise_padding=[[1, 1], [2, 2, 2], [2, 2], [2, 2, 2]],
    output_num_filters=288,
    depthwise_filters=16,
    depthwise_stride=2,
    depthwise_residual=False,
    last_layer_filter=288,
    squeeze_and_excite=0.5,
    image_shape=(224, 224, 3),
    input_activation="hard_swish",
    output_activation="hard_swish",
    input_num_filters=16,
)


def measure(run_dir: Path, train: Path, test: Path, workdir: Path, *, qat_epochs: int, runs: int, rounds: int) -> dict:
    run = load_run(run_dir)
    manifest = read_manifest(test)
    inputs = run.preprocessor([row.text for row in manifest.rows], [row.image for row in manifest.rows])
    truth = manifest.encode_labels(run.labels)
    reports = {}
    for name, mode in PTQ_BUNDLES.items():
        logging.info("export %s", name)
        reports[name] = export_bundle(run_dir, workdir / name, quantize=mode)
    logging.info("QAT fine-tune, %d epochs", qat_epochs)
    qat_metrics = qat_finetune(run_dir, train, workdir / "qat_run", settings=QATSettings(epochs=qat_epochs)).metrics
    reports["qat-int8"] = export_bundle(workdir / "qat_run", workdir / "qat-int8", quantize="int8")
    float_labels = None
    result = {"qat": qat_metrics}
    for name, report in reports.items():
        labels = Predictor(report["path"]).predict_inputs(inputs).argmax(axis=1)
        float_labels = labels if float_labels is None else float_labels
        result[name] = {
            "test_accuracy": float(np.mean(labels == truth)),
            "label_agreement_with_float32": float(np.mean(labels == float_labels)),
            "size_bytes": report["size_bytes"],
            "size_vs_float32": round(report["size_bytes"] / reports["none"]["size_bytes"], 3),
            "compute_ops": report["ops"]["compute_ops"],
            "float_ops": report["ops"]["float_ops"],
            "parity_vs_keras": report["parity"],
        }
    latency = interleaved_latency({name: report["path"] for name, report in reports.items()}, runs, rounds)
    for name, figures in latency_figures(latency).items():
        result[name].update(figures, kept_float=reports[name]["kept_float"])
    return result


def latency_figures(latency: dict) -> dict:
    """Each bundle's p50 per thread count and its ratio to the float32 bundle's (`none`)."""
    return {
        name: {
            "latency_p50_ms": by_threads,
            "latency_vs_float32": {
                threads: round(ms / latency["none"][threads], 3) for threads, ms in by_threads.items()
            },
        }
        for name, by_threads in latency.items()
    }


def interleaved_latency(bundles: dict[str, str], runs: int, rounds: int = LATENCY_ROUNDS) -> dict:
    """p50 latency per bundle and thread count: the median over `rounds` rounds that visit every bundle in turn.

    Interleaving spreads a busy spell of a shared machine over all bundles instead of one.
    """
    samples = {name: {threads: [] for threads in (1, 2)} for name in bundles}
    for round_index in range(rounds):
        logging.info("latency round %d/%d", round_index + 1, rounds)
        for name, bundle in bundles.items():
            for threads in (1, 2):
                figures = benchmark_bundle(bundle, threads=threads, runs=runs)
                samples[name][threads].append(figures["latency_ms"]["p50"])
    return {
        name: {threads: float(np.median(values)) for threads, values in by_threads.items()}
        for name, by_threads in samples.items()
    }


def build_edge_run(workdir: Path, rows: int = 64, classes: int = 3) -> tuple[Path, Path]:
    """An edge-sized random run (see the module docstring) and a random manifest for it."""
    import keras_hub

    from mmkeras.models import build_model

    text_preset, vision_preset = workdir / "text_preset", workdir / "vision_preset"
    special_tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocabulary = special_tokens + [f"w{index}" for index in range(EDGE_VOCABULARY_SIZE - len(special_tokens))]
    keras_hub.models.BertBackbone(
        vocabulary_size=EDGE_VOCABULARY_SIZE, num_layers=2, num_heads=2, hidden_dim=128, intermediate_dim=512,
        max_sequence_length=EDGE_SEQUENCE_LENGTH,
    ).save_to_preset(text_preset)  # fmt: skip
    keras_hub.models.BertTokenizer(vocabulary=vocabulary).save_to_preset(text_preset)
    keras_hub.models.MobileNetBackbone(**EDGE_MOBILENET).save_to_preset(vision_preset)
    rng = np.random.default_rng(0)
    lines = ["text,image,label"]
    (workdir / "images").mkdir()
    for index in range(rows):
        Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)).save(workdir / "images" / f"{index}.png")
        words = " ".join(vocabulary[5 + word] for word in rng.integers(0, 2000, rng.integers(20, 60)))
        lines.append(f"{words},images/{index}.png,class{index % classes}")
    manifest = workdir / "data.csv"
    manifest.write_text("\n".join(lines) + "\n")
    model, preprocessor = build_model(
        str(text_preset), str(vision_preset), num_classes=classes, sequence_length=EDGE_SEQUENCE_LENGTH, seed=0
    )
    run_dir = workdir / "float_run"
    config = RunConfig(
        data=str(manifest), out=str(run_dir), text_backbone=str(text_preset), vision_backbone=str(vision_preset),
        sequence_length=EDGE_SEQUENCE_LENGTH, batch_size=16,
    )  # fmt: skip
    labels = [f"class{i}" for i in range(classes)]
    save_run(run_dir, model=model, preprocessor=preprocessor, labels=labels, config=config)
    return run_dir, manifest


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a trained run folder")
    parser.add_argument("--train", type=Path, help="its training manifest (QAT data)")
    parser.add_argument("--test", type=Path, help="a labelled test manifest")
    parser.add_argument("--edge", action="store_true", help="the edge-sized random configuration instead")
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--runs", type=int, default=200, help="timed runs per latency figure")
    parser.add_argument(
        "--rounds", type=int, default=LATENCY_ROUNDS, help="interleaved rounds (the median is reported)"
    )
    parser.add_argument("--workdir", type=Path, help="keep the runs and bundles here (default: a temp folder)")
    parser.add_argument("--latency-only", type=Path, help="only measure the latency of the bundles a --workdir kept")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    if args.latency_only:
        names = [*PTQ_BUNDLES, "qat-int8"]
        bundles = {name: args.latency_only / name for name in names}
        result = latency_figures(interleaved_latency(bundles, args.runs, args.rounds))
        print(json.dumps(result, indent=2))
        return result
    if args.edge == bool(args.run and args.train and args.test):
        parser.error("give either --run, --train and --test, or --edge")
    with tempfile.TemporaryDirectory(prefix="mmkeras-qat-bench-") as folder:
        workdir = args.workdir or Path(folder)
        workdir.mkdir(parents=True, exist_ok=True)
        if args.edge:
            run_dir, manifest = build_edge_run(workdir)
            figures = measure(
                run_dir, manifest, manifest, workdir, qat_epochs=args.qat_epochs, runs=args.runs, rounds=args.rounds
            )
            result = {"configuration": "edge-sized random", **figures}
        else:
            figures = measure(
                args.run, args.train, args.test, workdir, qat_epochs=args.qat_epochs, runs=args.runs, rounds=args.rounds
            )
            result = {"configuration": str(args.run), **figures}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
