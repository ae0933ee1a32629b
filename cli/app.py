"""The `mmkeras` command line: a thin layer over the public Python API.

Every command calls the same function a Python user would (`train`,
`evaluate`, `export_bundle`, `Predictor`, ...). TensorFlow is imported only
by the commands that need it, so `predict`, `benchmark` and `evaluate BUNDLE`
start fast and run where only the device runtime is installed.

Exit codes: 0 success, 2 user error (one line on stderr), 1 internal error
(a traceback only with `--debug`).
"""

import json
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Literal, Optional

import typer

from mmkeras.config import RunConfig
from mmkeras.errors import UserError

app = typer.Typer(
    name="mmkeras",
    help="Train text+image models from keras-hub backbones and ship them as LiteRT bundles. "
    "Add --debug anywhere for a traceback on internal errors.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# mmkeras.config.STRATEGIES, spelled out for typer's choices (typing cannot build a Literal from a tuple).
StrategyName = Literal["auto", "one", "mirrored", "multi-worker", "tpu"]
JSON_OPTION = typer.Option(False, "--json", help="Print exactly one JSON object on stdout (logs go to stderr).")


def emit(result: dict, as_json: bool, human: str):
    """The command's result: one JSON object, or a human summary."""
    typer.echo(json.dumps(result, ensure_ascii=False) if as_json else human)


@app.command()
def train(
    data: Optional[Path] = typer.Option(None, "--data", help="Training manifest (CSV or JSONL: text, image, label)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder to write."),
    val: Optional[Path] = typer.Option(None, "--val", help="Validation manifest (early stopping, best weights)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML run config; flags override it."),
    text_backbone: Optional[str] = typer.Option(None, help="keras-hub preset, preset folder, HF folder, or 'tiny'."),
    vision_backbone: Optional[str] = typer.Option(
        None, help="keras-hub preset, preset folder, HF folder, 'tiny' (small CNN), 'tiny-vit' or 'tiny-mobilenet'."
    ),
    fusion: Optional[Literal["cross-attention", "concat", "gated"]] = typer.Option(None),
    epochs: Optional[int] = typer.Option(None, min=1),
    batch_size: Optional[int] = typer.Option(None, min=1),
    learning_rate: Optional[float] = typer.Option(None, help="Peak learning rate (default: by backbone kind)."),
    new_layers_lr_scale: Optional[float] = typer.Option(
        None, help="Fine-tuning a pretrained backbone: fusion and head learn this many times faster (default 20)."
    ),
    seed: Optional[int] = typer.Option(None),
    deterministic: Optional[bool] = typer.Option(None, "--deterministic", help="Deterministic TensorFlow ops."),
    on_bad_row: Optional[Literal["fail", "skip"]] = typer.Option(None),
    strategy: Optional[StrategyName] = typer.Option(None),
    resume: Optional[bool] = typer.Option(
        None, "--resume", help="Continue the run in --out from its last checkpoint (same flags)."
    ),
    freeze: Optional[Literal["none", "text", "vision", "both"]] = typer.Option(None),
    lora_rank: Optional[int] = typer.Option(None, min=0),
    cache_features: Optional[bool] = typer.Option(None, "--cache-features"),
    modality_dropout: Optional[float] = typer.Option(
        None, min=0.0, max=1.0, help="Probability of hiding the text or the image of a training example."
    ),
    mixed_precision: Optional[Literal["auto", "off", "float16", "bfloat16"]] = typer.Option(
        None, help="auto: mixed float16 on a GPU, off on a CPU."
    ),
    gradient_accumulation: Optional[int] = typer.Option(
        None, min=1, help="Batches per optimizer update (the update of a batch this many times bigger)."
    ),
    class_weight: Optional[Literal["none", "balanced"]] = typer.Option(
        None, help="balanced: weigh each class's loss by rows / (classes * rows of the class)."
    ),
    checkpoint_steps: Optional[int] = typer.Option(
        None, min=0, help="Also checkpoint every N optimizer updates (0: each epoch only)."
    ),
    as_json: bool = JSON_OPTION,
):
    """Train a model on a manifest and write a run folder.

    Under --strategy multi-worker, start every worker with the same flags and
    its own TF_CONFIG; only the chief writes --out and prints the result.
    """
    from mmkeras.training.trainer import train as train_run

    base = RunConfig.from_yaml(config) if config else RunConfig()
    flags = {key: value for key, value in locals().items() if key in RunConfig.__dataclass_fields__}
    paths = {key: str(flags[key]) for key in ("data", "out", "val") if flags[key] is not None}
    result = train_run(base.replace(**{**flags, **paths}))
    if not result.is_chief:
        return
    metrics = result.metrics
    emit(
        metrics,
        as_json,
        f"trained {metrics['epochs_completed']} epochs: loss {metrics['loss']:.4f}, "
        f"val_accuracy {metrics['val_accuracy']}, run in {result.run_dir}",
    )


@app.command()
def evaluate(
    target: Path = typer.Argument(..., help="A run folder or a bundle folder."),
    data: Path = typer.Option(..., "--data", help="Labelled manifest to evaluate on."),
    as_json: bool = JSON_OPTION,
):
    """Accuracy, macro-F1, per-class figures and modality ablation on a manifest."""
    from mmkeras.evaluation.evaluate import evaluate as evaluate_target

    figures = evaluate_target(target, data)
    ablation = figures["modality_ablation"]
    emit(
        figures,
        as_json,
        f"accuracy {figures['accuracy']:.4f}  macro_f1 {figures['macro_f1']:.4f}  n {figures['n']}  "
        f"(text only {ablation['text_only']['accuracy']:.4f}, image only {ablation['image_only']['accuracy']:.4f})",
    )


@app.command()
def qat(
    run_dir: Path = typer.Argument(..., help="A float run folder (or a QAT run to train further)."),
    data: Path = typer.Option(..., "--data", help="Training manifest for the QAT fine-tune."),
    out: Path = typer.Option(..., "--out", help="QAT run folder to write."),
    val: Optional[Path] = typer.Option(None, "--val", help="Validation manifest (reported)."),
    epochs: int = typer.Option(2, "--epochs", min=1),
    learning_rate: Optional[float] = typer.Option(None, help="Peak learning rate (default: a tenth of the run's)."),
    batch_size: Optional[int] = typer.Option(None, min=1, help="Batch size (default: the run's)."),
    calibration_batches: int = typer.Option(8, min=1, help="Batches that set the activation ranges first."),
    unknown_layers: Literal["error", "warn"] = typer.Option(
        "error", help="A layer type QAT does not know: refuse it, or warn and leave it float."
    ),
    strategy: Optional[StrategyName] = typer.Option(
        None, help="tf.distribute strategy, as for train (default: the run's)."
    ),
    checkpoint_steps: Optional[int] = typer.Option(
        None, min=0, help="Also checkpoint every N optimizer updates (default: the run's)."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue the QAT run in --out from its last checkpoint."),
    as_json: bool = JSON_OPTION,
):
    """Fine-tune a run with quantization-aware training; write a QAT run for export --quantize int8.

    Under --strategy multi-worker, start every worker with the same flags and
    its own TF_CONFIG; only the chief writes --out and prints the result.
    """
    from mmkeras.quantization.qat_training import QATSettings, qat_finetune

    settings = QATSettings(
        epochs=epochs,
        learning_rate=learning_rate,
        batch_size=batch_size,
        calibration_batches=calibration_batches,
        unknown_layers=unknown_layers,
        strategy=strategy,
        checkpoint_steps=checkpoint_steps,
    )
    metrics = qat_finetune(run_dir, data, out, val=val, settings=settings, resume=resume)
    if metrics is None:  # a multi-worker process that is not the chief
        return
    emit(
        metrics,
        as_json,
        f"QAT {metrics['epochs_completed']} epochs: loss {metrics['initial_loss']:.4f} -> {metrics['loss']:.4f}, "
        f"val_accuracy {metrics['val_accuracy']}, QAT run in {out}",
    )


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="A run folder."),
    out: Path = typer.Option(..., "--out", help="Bundle folder to write."),
    quantize: Literal["none", "float16", "dynamic", "int8"] = typer.Option("none"),
    calibration_data: Optional[Path] = typer.Option(
        None, help="Manifest for int8 calibration (default: a sample of the run's training manifest)."
    ),
    as_json: bool = JSON_OPTION,
):
    """Convert a run to a LiteRT bundle (model.tflite + bundle.json + tokenizer)."""
    from mmkeras.export.conversion_report import describe_report
    from mmkeras.export.converter import export_bundle

    report = export_bundle(run_dir, out, quantize=quantize, calibration_data=calibration_data)
    emit(report, as_json, describe_report(report))


@app.command()
def predict(
    bundle_dir: Path = typer.Argument(..., help="A bundle folder."),
    text: Optional[str] = typer.Option(None, "--text", help="The text (omit for a missing text)."),
    image: Optional[Path] = typer.Option(None, "--image", help="The image file (omit for a missing image)."),
    as_json: bool = JSON_OPTION,
):
    """Predict one example with the on-device runtime (no TensorFlow)."""
    from mmkeras.runtime.predictor import Predictor

    if text is None and image is None:
        raise UserError("give --text, --image or both")
    prediction = Predictor(bundle_dir).predict(text, image)
    best = sorted(prediction.scores.items(), key=lambda item: -item[1])[:3]
    emit(
        {"label": prediction.label, "scores": prediction.scores},
        as_json,
        f"{prediction.label}  (" + ", ".join(f"{label} {score:.3f}" for label, score in best) + ")",
    )


@app.command()
def benchmark(
    bundle_dir: Path = typer.Argument(..., help="A bundle folder."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Interpreter threads."),
    runs: int = typer.Option(100, "--runs", min=1, help="Timed runs (after 10 warm-up runs)."),
    as_json: bool = JSON_OPTION,
):
    """Latency percentiles (ms) and size of a bundle on this machine's CPU."""
    from mmkeras.runtime.benchmark import benchmark_bundle

    figures = benchmark_bundle(bundle_dir, threads=threads, runs=runs)
    latency = figures["latency_ms"]
    emit(
        figures,
        as_json,
        f"p50 {latency['p50']:.3f} ms  p90 {latency['p90']:.3f} ms  p99 {latency['p99']:.3f} ms  "
        f"size {figures['model_size_bytes']} bytes",
    )


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="A run folder."),
    out: Optional[Path] = typer.Option(None, "--out", help="HTML file to write (default RUN_DIR/report.html)."),
):
    """Write an HTML report: loss/accuracy curves, final figures, config."""
    from mmkeras.evaluation.report import write_report

    typer.echo(f"wrote {write_report(run_dir, out)}")


def configure_logging():
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("mmkeras")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: run the app, map errors to exit codes."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [arg for arg in argv if arg != "--debug"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    configure_logging()
    try:
        code = app(args=argv, prog_name="mmkeras", standalone_mode=False)
    except typer.TyperException as error:  # bad flags: typer's usage errors exit with code 2
        typer.echo(f"error: {error.format_message()}", err=True)
        code = error.exit_code
    except UserError as error:
        typer.echo(f"error: {error}", err=True)
        code = 2
    except typer.Abort:
        code = 130
    except Exception as error:  # an internal error: a bug, not the user's mistake
        if debug:
            traceback.print_exc()
        typer.echo(f"internal error: {type(error).__name__}: {error} (run with --debug for the traceback)", err=True)
        code = 1
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
