"""The `mmkeras` command line: a thin layer over the public Python API.

Every command calls the same function a Python user would (`train`,
`qat_finetune`, `evaluate`, `export_bundle`, `Predictor`, ...). Flags,
manifests and paths are checked before TensorFlow is imported
(`cli.preflight`), and only the commands that need TensorFlow import it, so
`predict`, `benchmark` and `evaluate BUNDLE` start fast and run where only
the device runtime is installed. Choices and defaults come from the config
objects (`RunConfig`, `QATSettings`), never written here a second time.

Exit codes: 0 success, 2 user error (one line on stderr), 1 internal error
(a traceback only with `--debug`). Progress and logs go to stderr; stdout
holds the result (one JSON object with `--json`).
"""

import errno
import json
import logging
import math
import os
import signal
import socket
import sys
import threading
import time
import traceback
from importlib import metadata
from pathlib import Path
from typing import Literal, Optional

import typer

from mmkeras import __version__
from mmkeras.cli import preflight
from mmkeras.compat import UntestedVersionError
from mmkeras.config import (
    AUGMENTATIONS,
    CACHE_DTYPES,
    CLASS_WEIGHTS,
    FREEZE_CHOICES,
    FUSIONS,
    MIXED_PRECISION,
    MODALITY_BALANCE,
    ON_BAD_ROW,
    STRATEGIES,
    TASKS,
    RunConfig,
    setting_help,
)
from mmkeras.data.folder_manifests import TEST_SHARE, VAL_SHARE, FolderManifests, folder_manifests
from mmkeras.data.manifest import BadRowsError
from mmkeras.data.service_address import check_port, parse_address
from mmkeras.errors import UserError
from mmkeras.evaluation.zero_shot import DEFAULT_PROMPT
from mmkeras.framework_logs import VERBOSE_ENV, import_tensorflow_quietly, native_stderr_kept_off, quiet_frameworks
from mmkeras.peak_memory import format_bytes
from mmkeras.progress import install_log_handler
from mmkeras.quantization.qat_settings import CALIBRATION_ROWS, LEARNING_RATE_FACTOR, UNKNOWN_LAYERS, QATSettings
from mmkeras.runs import is_run_folder, manifest_columns
from mmkeras.runtime.benchmark import DEFAULT_ACCURACY_TOLERANCE, DEFAULT_RUNS, WARMUP_RUNS
from mmkeras.runtime.bundle import QUANTIZATION_MODES, WEB_SITE_FOLDER

logger = logging.getLogger("mmkeras")

app = typer.Typer(
    name="mmkeras",
    help="Train text+image models from keras-hub backbones and ship them as LiteRT bundles.\n\n"
    "Every command also takes --verbose (TensorFlow and LiteRT logs) and --debug (tracebacks of internal errors).",
    add_completion=False,
    pretty_exceptions_enable=False,
)

# OSError numbers that mean the machine refused (space, permissions, a read-only filesystem), not a bug.
ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS})
# The help's type column of an on/off option: empty (typer would show `<bool>`, as if it took a value).
FLAG = ""
JSON_OPTION = typer.Option(
    False, "--json", metavar=FLAG, help="Print exactly one JSON object on stdout (progress goes to stderr)."
)
TEXT_OPTION = typer.Option(None, "--text", help="The text (omit for a missing text).")
IMAGE_OPTION = typer.Option(None, "--image", help="The image file (omit for a missing image).")
# The manifest's column names, where they are not text, image, label (a run keeps them for later commands).
TEXT_COLUMN_OPTION = typer.Option(
    None, "--text-column", help="The manifest column holding the texts.", show_default="text, or the run's"
)
IMAGE_COLUMN_OPTION = typer.Option(
    None, "--image-column", help="The manifest column holding the image paths.", show_default="image, or the run's"
)
LABEL_COLUMN_OPTION = typer.Option(
    None, "--label-column", help="The manifest column holding the labels.", show_default="label, or the run's"
)
# Package versions `--version` reports, when installed (read from metadata: nothing is imported).
VERSION_PACKAGES = ("tensorflow", "keras", "keras-hub", "ai-edge-litert", "tokenizers")


def setting(name: str, *flags: str, help: str | None = None, **kwargs):
    """An option that overrides `RunConfig.<name>`; `--help` shows RunConfig's help text and default unless told
    otherwise (a command where the setting means more, e.g. `cv`'s epochs of each fold)."""
    default = RunConfig.__dataclass_fields__[name].default
    help = setting_help(name) if help is None else help
    if isinstance(default, bool):  # a --flag/--no-flag pair: no value to show
        on, off = flags[0].split("/")
        shown = on if default else off
        return typer.Option(None, *flags, help=help, metavar=FLAG, **{"show_default": shown, **kwargs})
    return typer.Option(None, *flags, help=help, **{"show_default": str(default), **kwargs})


def qat_setting(name: str, help: str, **kwargs):
    """An option that overrides `QATSettings.<name>`; `--help` shows its default."""
    default = QATSettings.__dataclass_fields__[name].default
    return typer.Option(None, help=help, show_default="the run's" if default is None else str(default), **kwargs)


# The options train, cv and align share, declared once so that each reads the same in every command's --help.
OUT_OPTION = typer.Option(None, "--out", help="Run folder to write.")
CONFIG_OPTION = typer.Option(None, "--config", help="YAML run config; flags override it.")
TEXT_BACKBONE_OPTION = setting("text_backbone")
VISION_BACKBONE_OPTION = setting("vision_backbone")
FUSION_OPTION = setting("fusion")
EPOCHS_OPTION = setting("epochs", min=1)
BATCH_SIZE_OPTION = setting("batch_size", min=1)
LEARNING_RATE_OPTION = setting("learning_rate", show_default="5e-5 when pretrained backbone weights train, else 1e-3")
SEED_OPTION = setting("seed")
DETERMINISTIC_OPTION = setting("deterministic", "--deterministic/--no-deterministic")
STRATEGY_OPTION = setting("strategy")
RESUME_OPTION = typer.Option(
    False, "--resume", metavar=FLAG, help="Continue the run in --out from its last checkpoint (same flags)."
)
FREEZE_OPTION = setting("freeze")
LORA_RANK_OPTION = setting("lora_rank", min=0)
MIXED_PRECISION_OPTION = setting("mixed_precision")
GRADIENT_ACCUMULATION_OPTION = setting("gradient_accumulation", min=1)
CHECKPOINT_STEPS_OPTION = setting("checkpoint_steps", min=0)
MODALITY_BALANCE_OPTION = setting("modality_balance")
IMAGE_SIZE_OPTION = setting("image_size", show_default="a checkpoint folder's own size; tiny: 32", min=16)
EARLY_STOPPING_PATIENCE_OPTION = setting("early_stopping_patience", min=0)


def emit(result: dict, as_json: bool, human: str):
    """The command's result on stdout: one JSON object, or a human summary."""
    typer.echo(json.dumps(finite_or_null(result), ensure_ascii=False, allow_nan=False) if as_json else human)


def finite_or_null(value):
    """`value` with every NaN or infinity replaced by `None`: JSON has no NaN, and `--json` must parse."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite_or_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(item) for item in value]
    return value


def load_tensorflow():
    """Import TensorFlow once, with its import-time log lines hidden, saying so (it takes seconds)."""
    logger.info("loading TensorFlow")
    import_tensorflow_quietly()


def prepare_target(target: Path, command: str):
    """A bundle runs on the device runtime as it is; a run folder is checked, then TensorFlow is loaded."""
    if not preflight.is_bundle_folder(target):
        preflight.check_run_folder(target)
        preflight.require_training_extra(command)
        load_tensorflow()


def run_config_from(config_file: Path | None, **flags) -> RunConfig:
    """The run config of `--config` (or the defaults) with the flags the user gave.

    A setting's error names its flag (`--learning-rate`, not `learning_rate`).
    """
    base = RunConfig.from_yaml(config_file) if config_file else RunConfig()
    overrides = {name: str(value) if isinstance(value, Path) else value for name, value in given(**flags).items()}
    try:
        return base.replace(**overrides)
    except UserError as error:
        if error.setting not in overrides or error.path:
            raise
        raise error.naming_setting("--" + error.setting.replace("_", "-")) from None


def given(**values) -> dict:
    """The options the user gave (typer passes `None` for the others)."""
    return {key: value for key, value in values.items() if value is not None}


@app.callback(invoke_without_command=True)
def root(
    context: typer.Context,
    version: bool = typer.Option(
        False, "--version", metavar=FLAG, is_eager=True, help="Print the versions and exit."
    ),
):
    """Train text+image models from keras-hub backbones and ship them as LiteRT bundles."""
    if version:
        installed = []
        for package in VERSION_PACKAGES:
            try:
                installed.append(f"{package} {metadata.version(package)}")
            except metadata.PackageNotFoundError:
                continue
        typer.echo(f"mmkeras {__version__} (Python {sys.version.split()[0]}; {', '.join(installed)})")
        raise typer.Exit()
    if context.invoked_subcommand is None:
        typer.echo(context.get_help())
        raise typer.Exit()


@app.command()
def train(
    data: Optional[Path] = typer.Option(
        None, "--data", help="Training manifest (CSV, JSONL or Parquet: text, image, label)."
    ),
    out: Optional[Path] = OUT_OPTION,
    val: Optional[Path] = typer.Option(None, "--val", help="Validation manifest (early stopping, best weights)."),
    config: Optional[Path] = CONFIG_OPTION,
    text_backbone: Optional[str] = TEXT_BACKBONE_OPTION,
    vision_backbone: Optional[str] = VISION_BACKBONE_OPTION,
    fusion: Optional[Literal[FUSIONS]] = FUSION_OPTION,
    sequence_length: Optional[int] = setting(
        "sequence_length", show_default="the text backbone's limit, at most 128 (tiny: 32)", min=2
    ),
    augment: Optional[Literal[AUGMENTATIONS]] = setting("augment"),
    epochs: Optional[int] = EPOCHS_OPTION,
    batch_size: Optional[int] = BATCH_SIZE_OPTION,
    learning_rate: Optional[float] = LEARNING_RATE_OPTION,
    new_layers_lr_scale: Optional[float] = setting("new_layers_lr_scale"),
    seed: Optional[int] = SEED_OPTION,
    deterministic: Optional[bool] = DETERMINISTIC_OPTION,
    on_bad_row: Optional[Literal[ON_BAD_ROW]] = setting("on_bad_row"),
    strategy: Optional[Literal[STRATEGIES]] = STRATEGY_OPTION,
    resume: bool = RESUME_OPTION,
    freeze: Optional[Literal[FREEZE_CHOICES]] = FREEZE_OPTION,
    lora_rank: Optional[int] = LORA_RANK_OPTION,
    cache_features: Optional[bool] = setting("cache_features", "--cache-features/--no-cache-features"),
    cache_dir: Optional[Path] = setting("cache_dir", show_default="~/.cache/mmkeras/features"),
    cache_dtype: Optional[Literal[CACHE_DTYPES]] = setting("cache_dtype"),
    modality_dropout: Optional[float] = setting("modality_dropout", min=0.0, max=1.0),
    mixed_precision: Optional[Literal[MIXED_PRECISION]] = MIXED_PRECISION_OPTION,
    remat: Optional[bool] = setting("remat", "--remat/--no-remat"),
    gradient_accumulation: Optional[int] = GRADIENT_ACCUMULATION_OPTION,
    class_weight: Optional[Literal[CLASS_WEIGHTS]] = setting("class_weight"),
    checkpoint_steps: Optional[int] = CHECKPOINT_STEPS_OPTION,
    modality_balance: Optional[Literal[MODALITY_BALANCE]] = MODALITY_BALANCE_OPTION,
    aux_loss_weight: Optional[float] = setting("aux_loss_weight", min=0.0),
    task: Optional[Literal[TASKS]] = setting("task"),
    init_from: Optional[Path] = setting("init_from"),
    image_size: Optional[int] = IMAGE_SIZE_OPTION,
    early_stopping_patience: Optional[int] = EARLY_STOPPING_PATIENCE_OPTION,
    text_column: Optional[str] = TEXT_COLUMN_OPTION,
    image_column: Optional[str] = IMAGE_COLUMN_OPTION,
    label_column: Optional[str] = LABEL_COLUMN_OPTION,
    data_service: Optional[str] = setting("data_service"),
    as_json: bool = JSON_OPTION,
):
    """Train a model on a manifest and write a run folder.

    Under --strategy multi-worker, start every worker with the same flags and
    its own TF_CONFIG; only the chief writes --out and prints the result.

    Example: mmkeras train --data samples/train.csv --val samples/val.csv --out runs/demo --epochs 10
    """
    run_config = run_config_from(
        config,
        data=data,
        out=out,
        val=val,
        text_backbone=text_backbone,
        vision_backbone=vision_backbone,
        fusion=fusion,
        sequence_length=sequence_length,
        augment=augment,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        new_layers_lr_scale=new_layers_lr_scale,
        seed=seed,
        deterministic=deterministic,
        on_bad_row=on_bad_row,
        strategy=strategy,
        freeze=freeze,
        lora_rank=lora_rank,
        cache_features=cache_features,
        cache_dir=cache_dir,
        cache_dtype=cache_dtype,
        modality_dropout=modality_dropout,
        mixed_precision=mixed_precision,
        remat=remat,
        gradient_accumulation=gradient_accumulation,
        class_weight=class_weight,
        checkpoint_steps=checkpoint_steps,
        modality_balance=modality_balance,
        aux_loss_weight=aux_loss_weight,
        task=task,
        init_from=init_from,
        image_size=image_size,
        early_stopping_patience=early_stopping_patience,
        text_column=text_column,
        image_column=image_column,
        label_column=label_column,
        data_service=data_service,
    )
    if not run_config.data or not run_config.out:
        raise UserError("training needs a training manifest (--data) and a run folder (--out)")
    preflight.require_training_extra("train")
    # Read once: handed to the run, which neither reads them nor logs their skipped rows again.
    check = {"on_bad_row": run_config.on_bad_row, "columns": run_config.columns}
    manifests = [preflight.check_manifest(run_config.data, flag="--data", **check)]
    if run_config.val:
        manifests.append(preflight.check_manifest(run_config.val, flag="--val", **check))
    if run_config.init_from:
        preflight.check_run_folder(run_config.init_from)
    preflight.check_out_folder(run_config.out)
    if run_config.data_service:
        parse_address(run_config.data_service, "--data-service")
    load_tensorflow()
    from mmkeras.training.fit import kept_weights_summary
    from mmkeras.training.trainer import train as train_run

    result = train_run(run_config, resume=resume, manifests=manifests)
    if not result.is_chief:
        return
    metrics = result.metrics
    # A multi-label run's accuracy is the exact match at 0.5; its tuned figures say more.
    shown = ("val_mAP", "val_micro_f1") if "val_mAP" in metrics else ("val_accuracy",)
    figures = ", ".join(f"{name} {format_figure(metrics[name])}" for name in shown)
    kept = kept_weights_summary(
        result.history,
        metrics["kept_epoch"],
        metrics["stopped_early"],
        run_config.early_stopping_patience,
        with_accuracy="val_mAP" not in metrics,
    )
    emit(
        metrics,
        as_json,
        f"trained {counted_epochs(metrics)}: loss {metrics['loss']:.4f}, {figures}, "
        f"run in {result.run_dir}"
        f"\n{kept}",
    )


@app.command()
def evaluate(
    target: Path = typer.Argument(..., help="A run folder or a bundle folder."),
    data: Path = typer.Option(..., "--data", help="Labelled manifest to evaluate on."),
    zero_shot: bool = typer.Option(
        False, "--zero-shot", metavar=FLAG, help="An align run classifies the images by the label names alone."
    ),
    prompt: str = typer.Option(DEFAULT_PROMPT, "--prompt", help="With --zero-shot: the text of a class, with {label}."),
    text_column: Optional[str] = TEXT_COLUMN_OPTION,
    image_column: Optional[str] = IMAGE_COLUMN_OPTION,
    label_column: Optional[str] = LABEL_COLUMN_OPTION,
    as_json: bool = JSON_OPTION,
):
    """Accuracy, macro-F1, calibration, consistency and modality ablation on a manifest; saves a results folder.

    A bundle is evaluated with the device runtime (no TensorFlow needed).
    The figures, tables and plots go to TARGET/results/<manifest stem>/.
    A multilabel run or bundle reports mAP, micro/macro-F1 and exact match at its tuned thresholds.

    Example: mmkeras evaluate bundles/demo --data samples/test.csv --json
    """
    columns = manifest_columns(target, {"text": text_column, "image": image_column, "label": label_column})
    preflight.check_manifest(data, flag="--data", columns=columns)
    if zero_shot:
        preflight.check_run_folder(target)
    prepare_target(target, "evaluate --zero-shot" if zero_shot else "evaluate RUN_DIR")
    from mmkeras.evaluation.evaluate import evaluate as evaluate_target

    figures = evaluate_target(target, data, zero_shot=zero_shot, prompt=prompt, columns=columns)
    emit(figures, as_json, describe_evaluation(figures))


def describe_evaluation(figures: dict) -> str:
    """The summary line of `evaluate`'s figures: zero-shot, multilabel or classifier ones."""
    if "prompt" in figures:
        return (f"zero-shot accuracy {figures['accuracy']:.4f}  macro_f1 {figures['macro_f1']:.4f}  "
                f"n {figures['n']}  ({len(figures['labels'])} classes, prompt {figures['prompt']!r})")
    if "mAP" in figures:
        return (f"mAP {figures['mAP']:.4f}  micro_f1 {figures['micro_f1']:.4f}  "
                f"macro_f1 {figures['macro_f1']:.4f}  exact_match {figures['exact_match']:.4f}  n {figures['n']}\n"
                f"results in {figures['results_dir']}")
    ablation = figures["modality_ablation"]
    return (
        f"accuracy {figures['accuracy']:.4f}  macro_f1 {figures['macro_f1']:.4f}  n {figures['n']}  "
        f"(text only {ablation['text_only']['accuracy']:.4f}, image only {ablation['image_only']['accuracy']:.4f})  "
        f"ECE {figures['calibration']['ece']:.4f}\nresults in {figures['results_dir']}"
    )


@app.command()
def qat(
    run_dir: Path = typer.Argument(..., help="A float run folder (or a QAT run to train further)."),
    data: Path = typer.Option(..., "--data", help="Training manifest for the QAT fine-tune."),
    out: Path = typer.Option(..., "--out", help="QAT run folder to write."),
    val: Optional[Path] = typer.Option(None, "--val", help="Validation manifest (reported).", show_default="the run's"),
    epochs: Optional[int] = qat_setting("epochs", "QAT epochs.", min=1),
    learning_rate: Optional[float] = typer.Option(
        None, help="Peak learning rate.", show_default=f"{LEARNING_RATE_FACTOR} x the run's"
    ),
    batch_size: Optional[int] = qat_setting("batch_size", "Global batch size.", min=1),
    calibration_batches: Optional[int] = qat_setting(
        "calibration_batches", "Batches that set the activation ranges first.", min=1
    ),
    unknown_layers: Optional[Literal[UNKNOWN_LAYERS]] = qat_setting(
        "unknown_layers", "A layer type QAT does not know: refuse it, or warn and leave it float."
    ),
    strategy: Optional[Literal[STRATEGIES]] = qat_setting("strategy", setting_help("strategy")),
    checkpoint_steps: Optional[int] = qat_setting("checkpoint_steps", setting_help("checkpoint_steps"), min=0),
    integer_only: bool = typer.Option(
        False, "--integer-only", metavar=FLAG,
        help="Fake-quantize every op, hard-swish and the attention too, for export --integer-only.",
    ),
    resume: bool = typer.Option(
        False, "--resume", metavar=FLAG, help="Continue the QAT run in --out from its last checkpoint."
    ),
    text_column: Optional[str] = TEXT_COLUMN_OPTION,
    image_column: Optional[str] = IMAGE_COLUMN_OPTION,
    label_column: Optional[str] = LABEL_COLUMN_OPTION,
    as_json: bool = JSON_OPTION,
):
    """Fine-tune a run with quantization-aware training; write a QAT run for export --quantize int8.

    Under --strategy multi-worker, start every worker with the same flags and
    its own TF_CONFIG; only the chief writes --out and prints the result.

    Example: mmkeras qat runs/demo --data samples/train.csv --val samples/val.csv --out runs/demo-qat
    """
    settings = QATSettings(
        **given(
            epochs=epochs,
            learning_rate=learning_rate,
            batch_size=batch_size,
            calibration_batches=calibration_batches,
            unknown_layers=unknown_layers,
            strategy=strategy,
            checkpoint_steps=checkpoint_steps,
            integer_only=integer_only or None,
        )
    )
    on_bad_row = preflight.check_run_folder(run_dir).on_bad_row  # QAT handles bad rows as the run did
    columns = manifest_columns(run_dir, {"text": text_column, "image": image_column, "label": label_column})
    manifests = [preflight.check_manifest(data, flag="--data", on_bad_row=on_bad_row, columns=columns)]
    if val:
        manifests.append(preflight.check_manifest(val, flag="--val", on_bad_row=on_bad_row, columns=columns))
    preflight.check_out_folder(out)
    preflight.require_training_extra("qat")
    load_tensorflow()
    from mmkeras.quantization.qat_training import qat_finetune
    from mmkeras.tasks.registry import target_task

    result = qat_finetune(
        run_dir, data, out, val=val, settings=settings, resume=resume, columns=columns, manifests=manifests
    )
    if not result.is_chief:
        return
    metrics = result.metrics
    # What its accuracy measures (a multilabel run's: the exact match at 0.5), as the epoch lines name it.
    accuracy_name = target_task(run_dir).figure_name("val_accuracy")
    emit(
        metrics,
        as_json,
        f"QAT {counted_epochs(metrics)}: loss on the training rows (no dropout or augmentation) "
        f"{metrics['initial_loss']:.4f} -> {metrics['final_loss']:.4f}, "
        f"{accuracy_name} {format_figure(metrics['val_accuracy'])}, QAT run in {result.run_dir}",
    )


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="A run folder."),
    out: Path = typer.Option(..., "--out", help="Bundle folder to write (or an existing bundle to replace)."),
    quantize: Literal[QUANTIZATION_MODES] = typer.Option(
        QUANTIZATION_MODES[0], help="Weights and activations: none (float32), float16, dynamic (int8 weights), int8, "
        "int16x8 (int16 activations, int8 weights; no XNNPACK kernels).",
    ),
    calibration_data: Optional[Path] = typer.Option(
        None, help="Manifest for int8 and int16x8 calibration.", show_default="the run's training manifest"
    ),
    calibration_rows: int = typer.Option(
        CALIBRATION_ROWS, min=1, help="Calibrate on the manifest's rows up to this many (a seeded sample beyond)."
    ),
    keep_float: Optional[str] = typer.Option(
        None, "--keep-float",
        help="int8: more op types left float, comma-separated (e.g. GELU,MUL).",
        show_default="BATCH_MATMUL,HARD_SWISH,SELECT_V2,SOFTMAX,SQUARED_DIFFERENCE,TRANSPOSE",
    ),
    web: bool = typer.Option(
        False, "--web", metavar=FLAG, help="Also build the browser site (as `mmkeras web`) in BUNDLE_DIR/web."
    ),
    integer_only: bool = typer.Option(
        False, "--integer-only", metavar=FLAG,
        help="int8: every op int8, uint8 image and logits (scale and zero point in bundle.json); "
        "a model that keeps a float op is refused, naming it.",
    ),
    as_json: bool = JSON_OPTION,
):
    """Convert a run to a LiteRT bundle (model.tflite + bundle.json + tokenizer).

    Example: mmkeras export runs/demo-qat --out bundles/demo-int8 --quantize int8
    """
    preflight.check_run_folder(run_dir)
    if calibration_data:
        preflight.check_manifest(
            calibration_data, flag="--calibration-data", require_labels=False, columns=manifest_columns(run_dir)
        )
    from mmkeras.export.bundle_writer import check_replaceable

    check_replaceable(out)
    preflight.require_training_extra("export")
    load_tensorflow()
    from mmkeras.export.conversion_report import describe_report
    from mmkeras.export.dual_encoder_export import describe_dual_encoder_report
    from mmkeras.export.exported_run_report import export_and_report

    report = export_and_report(
        run_dir, out, quantize=quantize, calibration_data=calibration_data, calibration_rows=calibration_rows,
        keep_float=[name.strip().upper() for name in keep_float.split(",") if name.strip()] if keep_float else (),
        integer_only=integer_only,
    )
    if "encoders" in report:  # an align run exports a dual-encoder bundle: one report entry per encoder
        if web:
            logger.warning("--web: the browser page runs classifier bundles; none written for a dual encoder")
        emit(report, as_json, describe_dual_encoder_report(report))
        return
    human = describe_report(report)
    if web:
        from mmkeras.web.site_builder import build_site

        report["web"] = build_site(out, out / WEB_SITE_FOLDER)
        human += "\n" + describe_site(report["web"])
    emit(report, as_json, human)


@app.command()
def predict(
    bundle_dir: Path = typer.Argument(..., help="A bundle folder."),
    text: Optional[str] = typer.Option(
        None, "--text", help="The text (omit for a missing text); with --images, the text of every photo "
        "(their caption files are then not read; \"\" predicts the photos without a text).",
    ),
    image: Optional[Path] = IMAGE_OPTION,
    data: Optional[Path] = typer.Option(
        None, "--data", help="A manifest (CSV, JSONL or Parquet, labels optional) to predict row by row; needs --out."
    ),
    images: Optional[Path] = typer.Option(
        None, "--images", help="A folder of photos (and folders below) to predict one by one, each with the text "
        "of its caption .txt file (as `mmkeras manifest` reads them) or --text; needs --out.",
    ),
    out: Optional[Path] = typer.Option(None, "--out", help="With --data or --images: the predictions CSV to write."),
    top_k: int = typer.Option(
        3, "--top-k", min=1, help="With --data or --images: the best labels (and scores) of each row."
    ),
    on_bad_row: Literal[ON_BAD_ROW] = typer.Option(
        "fail", "--on-bad-row", help="With --data or --images: fail lists every bad row (photo) and writes nothing; "
        "skip writes them with the reason in an error column.",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", metavar=FLAG, help="With --data or --images: replace an existing --out file."
    ),
    text_column: Optional[str] = TEXT_COLUMN_OPTION,
    image_column: Optional[str] = IMAGE_COLUMN_OPTION,
    as_json: bool = JSON_OPTION,
):
    """Predict one example, every row of a manifest or every photo of a folder, with the on-device runtime.

    A multilabel bundle prints the labels at or above their thresholds (`a|b`; --json: `labels`, `scores`).
    With --data, the CSV at --out has one row per input row: its columns, then prediction, label_1, score_1, ...
    With --images, one row per photo (sorted by path): image (relative to the folder), text, then the same.

    Example: mmkeras predict bundles/demo --text "such a serene little card" --image photo.png
    Example: mmkeras predict bundles/demo --data photos.csv --out predictions.csv
    Example: mmkeras predict bundles/demo --images phone-photos/ --out predictions.csv
    """
    from mmkeras.runtime.predictor import Predictor

    if is_run_folder(bundle_dir) and not preflight.is_bundle_folder(bundle_dir):
        raise UserError(
            f"this is a run folder; predict takes a bundle: run `mmkeras export {bundle_dir} --out BUNDLE_DIR` "
            "first, then `mmkeras predict BUNDLE_DIR ...`",
            path=bundle_dir,
        )
    if images is not None:
        given = [flag for flag, value in (("--data", data), ("--image", image), ("--text-column", text_column),
                                          ("--image-column", image_column)) if value is not None]
        if given:  # the column options name a manifest's columns: a folder has none
            raise UserError(f"--images predicts a folder; leave out {given[0]}")
        predict_photo_folder(bundle_dir, images, out, text, top_k, on_bad_row, overwrite, as_json)
        return
    if data is not None:
        columns = {"text": text_column, "image": image_column}
        predict_manifest(bundle_dir, data, out, top_k, on_bad_row, overwrite, columns, as_json)
        return
    if text is None and image is None:
        raise UserError("give --text, --image or both (or --data ROWS.csv or --images DIR, with --out PREDICTIONS.csv)")
    predictor = Predictor(bundle_dir)
    prediction = predictor.predict(text, image)
    best = sorted(prediction.scores.items(), key=lambda item: -item[1])[:3]
    scores = ", ".join(f"{label} {score:.3f}" for label, score in best)
    if predictor.multilabel:  # a label set, maybe empty
        emit({"labels": prediction.labels, "scores": prediction.scores}, as_json,
             f"{'|'.join(prediction.labels) or '(no label)'}  ({scores})")
        return
    emit({"label": prediction.label, "scores": prediction.scores}, as_json, f"{prediction.label}  ({scores})")


def predict_manifest(bundle_dir, data, out, top_k, on_bad_row, overwrite, columns, as_json):
    """`predict --data`: every row of a manifest, written to the --out CSV."""
    if out is None:
        raise UserError("--data needs --out PREDICTIONS.csv (the file to write)")
    from mmkeras.runtime.batch_predict import predict_file

    summary = predict_file(
        bundle_dir, data, out, columns=given(**columns), on_bad_row=on_bad_row, top_k=top_k, overwrite=overwrite
    )
    emit_predictions_summary(summary, as_json, "rows")


def predict_photo_folder(bundle_dir, images, out, text, top_k, on_bad_row, overwrite, as_json):
    """`predict --images`: every photo of a folder, written to the --out CSV."""
    if out is None:
        raise UserError("--images needs --out PREDICTIONS.csv (the file to write)")
    from mmkeras.runtime.batch_predict import predict_folder

    summary = predict_folder(bundle_dir, images, out, text=text, on_bad_row=on_bad_row, top_k=top_k,
                             overwrite=overwrite)
    emit_predictions_summary(summary, as_json, "photos")


def emit_predictions_summary(summary, as_json, unit):
    """The one line (or --json) of a predictions CSV written: how many `unit`s (rows, photos), how many bad."""
    bad = summary["bad_rows"]
    noun = unit if bad > 1 else unit.removesuffix("s")
    their = "their reasons" if bad > 1 else "its reason"
    skipped = f" ({bad} bad {noun} written with {their} in the error column)" if bad else ""
    predicted = f"predicted {summary['predicted']} of {summary['rows']} {unit} into {summary['out']}"
    emit(summary, as_json, predicted + skipped)


@app.command()
def benchmark(
    bundle_dirs: list[Path] = typer.Argument(..., help="One or more bundle folders."),
    threads: Optional[int] = typer.Option(
        None, "--threads", min=1, help="Interpreter threads; with --compare, the largest count of 1..N measured.",
        show_default="auto; with --compare, the CPU count",
    ),
    runs: int = typer.Option(DEFAULT_RUNS, "--runs", min=1, help=f"Timed runs (after {WARMUP_RUNS} warm-up runs)."),
    compare: bool = typer.Option(
        False, "--compare", metavar=FLAG, help="Side by side (implied by several bundles): cold start, peak memory, "
        "threads 1..N, XNNPACK on and off, interleaved.",
    ),
    data: Optional[Path] = typer.Option(
        None, "--data", help="Labelled manifest: each bundle's accuracy on it, and the fastest at equal accuracy "
        "(implies --compare; bundles of one run).",
    ),
    accuracy_tolerance: float = typer.Option(
        DEFAULT_ACCURACY_TOLERANCE, "--accuracy-tolerance", min=0.0, max=1.0,
        help="With --data: how far below the best accuracy (a fraction of the rows) counts as equal.",
    ),
    image: Optional[Path] = typer.Option(
        None, "--image", help="Time preprocessing on this photo (every bundle; a camera photo decodes far slower).",
        show_default="random noise at the model's image size",
    ),
    text: Optional[str] = typer.Option(
        None, "--text", help="Time preprocessing on this text (every bundle).", show_default="a sample sentence"
    ),
    text_column: Optional[str] = TEXT_COLUMN_OPTION,
    image_column: Optional[str] = IMAGE_COLUMN_OPTION,
    label_column: Optional[str] = LABEL_COLUMN_OPTION,
    as_json: bool = JSON_OPTION,
):
    """Latency (ms) and size of bundles on this CPU; with --data, their accuracy and the fastest at equal accuracy.

    Example: mmkeras benchmark bundles/float bundles/int8 --threads 2 --json
    Example: mmkeras benchmark bundles/float bundles/int8 bundles/dynamic --data samples/test.csv
    Example: mmkeras benchmark bundles/float --image photo.jpg --text "a red bike"
    """
    side_by_side = compare or len(bundle_dirs) > 1 or data is not None
    if side_by_side:
        from mmkeras.runtime.bundle_comparison import compare_bundles, comparison_table

        columns = manifest_columns(bundle_dirs[0], {"text": text_column, "image": image_column, "label": label_column})
        if data is not None:
            preflight.check_manifest(data, flag="--data", columns=columns)
        figures = compare_bundles(
            bundle_dirs, max_threads=threads, runs=runs, data=data, columns=columns,
            accuracy_tolerance=accuracy_tolerance, image=image, text=text,
        )
        emit(figures, as_json, comparison_table(figures))
        return
    from mmkeras.runtime.benchmark import benchmark_bundle

    figures = benchmark_bundle(bundle_dirs[0], threads=threads, runs=runs, image=image, text=text)
    latency = figures["latency_ms"]
    emit(
        figures,
        as_json,
        f"p50 {latency['p50']:.3f} ms  p90 {latency['p90']:.3f} ms  p99 {latency['p99']:.3f} ms  "
        f"size {figures['model_size_bytes']} bytes  preprocessing p50 {figures['preprocess_ms']['p50']:.3f} ms  "
        f"on {figures['cpu']} ({figures['cpu_count']} CPUs)",
    )


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="A run folder."),
    out: Optional[Path] = typer.Option(None, "--out", help="HTML file to write.", show_default="RUN_DIR/report.html"),
):
    """Write an HTML report: loss/accuracy curves, final figures, config.

    Example: mmkeras report runs/demo --out demo.html
    """
    preflight.check_run_folder(run_dir)
    if out:
        preflight.check_output_file(out)
    preflight.require_training_extra("report")
    from mmkeras.evaluation.report import write_report

    typer.echo(f"wrote {write_report(run_dir, out)}")


@app.command()
def web(
    bundle_dir: Path = typer.Argument(..., help="A bundle folder."),
    out: Path = typer.Option(..., "--out", help="Site folder to write (or a site to replace)."),
    as_json: bool = JSON_OPTION,
):
    """Build a static site that runs the bundle in the browser (LiteRT.js), offline once built; needs npm.

    Example: mmkeras web bundles/demo --out sites/demo && python3 -m http.server -d sites/demo
    """
    from mmkeras.web.site_builder import build_site

    report = build_site(bundle_dir, out)
    emit(report, as_json, describe_site(report))


# How long Ctrl-C waits for a data-service server to stop cleanly before the process ends anyway.
SERVER_STOP_SECONDS = 10.0
data_service_app = typer.Typer(
    help="Servers of TensorFlow's tf.data service: move training's image decoding to other machines "
    "(train --data-service). Workers need mmkeras installed and the manifest's image paths readable.\n\n"
    "Example: mmkeras data-service dispatcher --port 5050"
)
app.add_typer(data_service_app, name="data-service")


@data_service_app.command("dispatcher")
def data_service_dispatcher(
    port: int = typer.Option(..., "--port", help="Port to listen on (0: any free port)."),
    work_dir: Optional[Path] = typer.Option(
        None, "--work-dir", help="Folder where the dispatcher keeps its state, so a restart continues its jobs."
    ),
):
    """Start a tf.data service dispatcher and serve until Ctrl-C.

    Example: mmkeras data-service dispatcher --port 5050
    """
    check_port(port, "--port", any_free=True)
    load_tensorflow()
    from mmkeras.data.data_service import start_dispatcher

    server = start_dispatcher(port, None if work_dir is None else str(work_dir))
    taken = server.target.rsplit(":", 1)[1]
    serve_until_interrupted(
        server, f"tf.data service dispatcher listening on grpc://{socket.gethostname()}:{taken} (Ctrl-C stops it)"
    )


@data_service_app.command("worker")
def data_service_worker(
    dispatcher: str = typer.Option(..., "--dispatcher", help="The dispatcher's HOST:PORT."),
    port: int = typer.Option(..., "--port", help="Port to listen on."),
    host: Optional[str] = typer.Option(
        None, "--host", help="Name or address trainers reach this machine by.", show_default="this hostname"
    ),
):
    """Start a tf.data service worker that decodes mmkeras training images, and serve until Ctrl-C.

    Example: mmkeras data-service worker --dispatcher trainer-host:5050 --port 5051
    """
    parse_address(dispatcher, "--dispatcher")
    check_port(port, "--port", any_free=False)
    load_tensorflow()
    from mmkeras.data.data_service import start_worker

    server = start_worker(dispatcher, port, host=host)
    serve_until_interrupted(
        server,
        f"tf.data service worker listening on {host or socket.gethostname()}:{port} for dispatcher {dispatcher} "
        "(Ctrl-C stops it)",
    )


def serve_until_interrupted(server, listening: str, stop_seconds: float = SERVER_STOP_SECONDS):
    """Print `listening`, block until Ctrl-C (or SIGTERM), then stop `server`: stopping is how a server's run
    ends, so exit 0.

    The process ends within `stop_seconds` of the signal, stopped cleanly or not: a tf.data worker
    stopped after a training job once hung past 30 s (its exit code -9 in CI), and a server that
    outlives Ctrl-C keeps its port. Its tasks hold nothing to save (a dispatcher journals to
    `--work-dir` as it goes), so the process exits without waiting for TensorFlow's threads.
    """
    # The handler, and the `try`, before the line: a supervisor (or a test) that sends SIGTERM once it reads the
    # line must find neither the default handler (exit -15) nor a KeyboardInterrupt outside the `try` (exit -2).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        typer.echo(listening)
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        stopping = threading.Thread(target=server.stop, daemon=True)
        stopping.start()
        stopping.join(stop_seconds)
        ended = "stopped" if not stopping.is_alive() else f"stopped (not cleanly within {stop_seconds:g} s)"
        typer.echo(ended, err=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def counted_epochs(metrics: dict) -> str:
    """A run's epochs in words, with their time and the process's peak memory, for the lines that end a run.

    Example:
    >>> counted_epochs({"epochs_completed": 3, "epoch_seconds": [8.1, 7.9, 8.0], "peak_memory_bytes": 1_604_000_000})
    '3 epochs (24.0 s, peak memory 1.60 GB)'
    """
    count, seconds, peak = metrics["epochs_completed"], sum(metrics["epoch_seconds"]), metrics.get("peak_memory_bytes")
    memory = "" if peak is None else f", peak memory {format_bytes(peak)}"
    return f"{'1 epoch' if count == 1 else f'{count} epochs'} ({seconds:.1f} s{memory})"


def describe_site(report: dict) -> str:
    return (
        f"wrote the web site {report['path']} ({report['files']} files, {report['size_bytes'] / 2**20:.1f} MB); "
        f"serve it with: python3 -m http.server -d {report['path']}"
    )


# -- evaluation and insight: cross-validation, comparison, explanation ---------------------------


@app.command()
def cv(
    data: Path = typer.Option(..., "--data", help="Labelled manifest to split into folds."),
    folds: int = typer.Option(5, "--folds", min=2, help="K: the number of folds (stratified by label)."),
    out: Path = typer.Option(..., "--out", help="Cross-validation folder (one run per fold); rerun to resume."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML run config of every fold; flags override it."),
    val: Optional[Path] = typer.Option(
        None, "--val", help="Validation manifest for early stopping (the held-out fold never picks weights)."
    ),
    text_backbone: Optional[str] = TEXT_BACKBONE_OPTION,
    vision_backbone: Optional[str] = VISION_BACKBONE_OPTION,
    fusion: Optional[Literal[FUSIONS]] = FUSION_OPTION,
    epochs: Optional[int] = setting("epochs", help="Training epochs of each fold.", min=1),
    batch_size: Optional[int] = BATCH_SIZE_OPTION,
    learning_rate: Optional[float] = LEARNING_RATE_OPTION,
    seed: Optional[int] = setting("seed", help="Seed of the split and of every fold's run."),
    on_bad_row: Optional[Literal[ON_BAD_ROW]] = setting(
        "on_bad_row",
        help="A bad row (unreadable image, empty label, malformed line, ...): fail lists every one and stops; skip "
        "drops them before the split (in no fold) and lists them in CV_DIR/skipped_rows.csv.",
    ),
    modality_dropout: Optional[float] = setting("modality_dropout", min=0.0, max=1.0),
    modality_balance: Optional[Literal[MODALITY_BALANCE]] = MODALITY_BALANCE_OPTION,
    aux_loss_weight: Optional[float] = setting("aux_loss_weight", min=0.0),
    image_size: Optional[int] = IMAGE_SIZE_OPTION,
    early_stopping_patience: Optional[int] = EARLY_STOPPING_PATIENCE_OPTION,
    text_column: Optional[str] = TEXT_COLUMN_OPTION,
    image_column: Optional[str] = IMAGE_COLUMN_OPTION,
    label_column: Optional[str] = LABEL_COLUMN_OPTION,
    as_json: bool = JSON_OPTION,
):
    """Stratified K-fold cross-validation: one run per fold, mean and standard deviation of every figure.

    Example: mmkeras cv --data samples/train.csv --folds 5 --out cv/samples --config samples/run.yaml
    """
    run_config = run_config_from(
        config,
        data=data,
        out=out,
        val=val,
        text_backbone=text_backbone,
        vision_backbone=vision_backbone,
        fusion=fusion,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        on_bad_row=on_bad_row,
        modality_dropout=modality_dropout,
        modality_balance=modality_balance,
        aux_loss_weight=aux_loss_weight,
        image_size=image_size,
        early_stopping_patience=early_stopping_patience,
        text_column=text_column,
        image_column=image_column,
        label_column=label_column,
    )
    preflight.require_training_extra("cv")
    check = {"on_bad_row": run_config.on_bad_row, "columns": run_config.columns}
    manifests = [preflight.check_manifest(data, flag="--data", **check)]
    if val:
        manifests.append(preflight.check_manifest(val, flag="--val", **check))
    preflight.check_output_folder(out)
    load_tensorflow()
    from mmkeras.evaluation.tables import summary_table
    from mmkeras.runs import SKIPPED_ROWS_FILE
    from mmkeras.training.cross_validation import SUMMARY_FILE, cross_validate

    result = cross_validate(run_config, folds, manifests=manifests)
    human = summary_table(result["summary"], title=f"{folds}-fold cross-validation, mean ± std")
    skipped, val_skipped = result["bad_rows_skipped"], result["val_rows_skipped"]
    if skipped or val_skipped:
        human += (f"\n{skipped} bad row{'s' if skipped != 1 else ''} skipped, in no fold, and {val_skipped} of --val: "
                  f"{out / SKIPPED_ROWS_FILE}")
    human += f"\nevery fold's figures in {out / SUMMARY_FILE}; fold K's run, results and report in {out}/fold-K/run"
    emit(result, as_json, human)


@app.command()
def compare(
    run_dirs: list[Path] = typer.Argument(..., help="Run folders to compare."),
    data: Optional[Path] = typer.Option(None, "--data", help="Labelled manifest to evaluate every run on."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for comparison.json and comparison.png."),
    as_json: bool = JSON_OPTION,
):
    """Runs side by side: settings, parameters, epoch time, figures, and bundle size and latency.

    Example: mmkeras compare runs/concat runs/gated runs/cross-attention --data samples/test.csv --out cmp
    """
    for run_dir in run_dirs:
        preflight.check_run_folder(run_dir)
    if data:
        preflight.check_manifest(data, flag="--data")
        preflight.require_training_extra("compare --data")
        load_tensorflow()
    if out:
        preflight.check_output_folder(out)
    from mmkeras.evaluation.compare import CHART_FILE, COMPARISON_FILE, compare_runs, comparison_table

    comparison = compare_runs(run_dirs, data, out=out)
    written = [out / name for name in (COMPARISON_FILE, CHART_FILE) if (out / name).is_file()] if out else []
    emit(comparison, as_json,
         comparison_table(comparison) + ("\nwrote " + " and ".join(map(str, written)) if written else ""))


@app.command()
def explain(
    target: Path = typer.Argument(..., help="A run folder or a bundle folder."),
    text: Optional[str] = TEXT_OPTION,
    image: Optional[Path] = IMAGE_OPTION,
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for explanation.png and explanation.json."),
    as_json: bool = JSON_OPTION,
):
    """Why the model decided: occlusion maps over image patches and words, the modality contribution,
    and for a cross-attention run the text's attention over the image. A bundle needs no TensorFlow.

    Example: mmkeras explain runs/demo --text "such a serene little card" --image photo.png --out why
    """
    prepare_target(target, "explain RUN_DIR")
    if out:
        preflight.check_output_folder(out)
    from mmkeras.evaluation.explain import explain as explain_prediction

    explanation = explain_prediction(target, text, image, out=out)
    modality = explanation["modality"]
    # With one modality given, the other's "only" figure is the answer to an empty input: say what is missing.
    if text is None:
        contribution = "no text"
    elif image is None:
        contribution = "no image"
    else:
        contribution = f"text only {modality['text_only']:.3f}, image only {modality['image_only']:.3f}"
    line = f"{explanation['label']} ({explanation['probability']:.3f}; {contribution})"
    emit(explanation, as_json, line + (f"\nwrote {out}" if out else ""))


@app.command()
def align(
    data: Optional[Path] = typer.Option(None, "--data", help="True (text, image) pairs; a label column groups rows."),
    out: Optional[Path] = OUT_OPTION,
    val: Optional[Path] = typer.Option(None, "--val", help="Validation pairs (recall@K, early stopping)."),
    config: Optional[Path] = CONFIG_OPTION,
    text_backbone: Optional[str] = TEXT_BACKBONE_OPTION,
    vision_backbone: Optional[str] = VISION_BACKBONE_OPTION,
    embedding_dim: Optional[int] = setting("embedding_dim", min=1),
    epochs: Optional[int] = EPOCHS_OPTION,
    batch_size: Optional[int] = setting("batch_size", help="Global batch: the in-batch negatives of every row.", min=1),
    learning_rate: Optional[float] = LEARNING_RATE_OPTION,
    seed: Optional[int] = SEED_OPTION,
    deterministic: Optional[bool] = DETERMINISTIC_OPTION,
    on_bad_row: Optional[Literal[ON_BAD_ROW]] = setting(
        "on_bad_row",
        help="A bad row (no text, no image, a missing or unreadable image, a malformed line, ...): fail lists "
        "every one and stops; skip drops them and lists them in RUN_DIR/skipped_rows.csv.",
    ),
    strategy: Optional[Literal[STRATEGIES]] = STRATEGY_OPTION,
    resume: bool = RESUME_OPTION,
    freeze: Optional[Literal[FREEZE_CHOICES]] = FREEZE_OPTION,
    lora_rank: Optional[int] = LORA_RANK_OPTION,
    mixed_precision: Optional[Literal[MIXED_PRECISION]] = MIXED_PRECISION_OPTION,
    gradient_accumulation: Optional[int] = GRADIENT_ACCUMULATION_OPTION,
    checkpoint_steps: Optional[int] = CHECKPOINT_STEPS_OPTION,
    image_size: Optional[int] = IMAGE_SIZE_OPTION,
    text_column: Optional[str] = TEXT_COLUMN_OPTION,
    image_column: Optional[str] = IMAGE_COLUMN_OPTION,
    label_column: Optional[str] = LABEL_COLUMN_OPTION,
    as_json: bool = JSON_OPTION,
):
    """Align a text and an image backbone contrastively on true pairs (CLIP-style) and write a run folder.

    Start a matching or any other classifier from it with train --init-from.

    Example: mmkeras align --data samples/matching/pairs.csv --val samples/matching/val_pairs.csv --out runs/align
    """
    run_config = run_config_from(
        config,
        data=data,
        out=out,
        val=val,
        text_backbone=text_backbone,
        vision_backbone=vision_backbone,
        embedding_dim=embedding_dim,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        deterministic=deterministic,
        on_bad_row=on_bad_row,
        strategy=strategy,
        freeze=freeze,
        lora_rank=lora_rank,
        mixed_precision=mixed_precision,
        gradient_accumulation=gradient_accumulation,
        checkpoint_steps=checkpoint_steps,
        image_size=image_size,
        text_column=text_column,
        image_column=image_column,
        label_column=label_column,
    )
    if not run_config.data or not run_config.out:
        raise UserError("align needs a manifest of true pairs (--data) and a run folder (--out)")
    preflight.require_training_extra("align")
    from mmkeras.data.pairs import read_pairs

    # Every row and image path, before TensorFlow.
    check = {"on_bad_row": run_config.on_bad_row, "columns": run_config.columns}
    manifests = [read_pairs(run_config.data, **check)]
    if run_config.val:
        manifests.append(read_pairs(run_config.val, **check))
    preflight.check_out_folder(run_config.out)
    load_tensorflow()
    from mmkeras.training.align_job import align as align_run
    from mmkeras.training.fit import kept_weights_summary

    result = align_run(run_config, resume=resume, manifests=manifests)
    if not result.is_chief:
        return
    metrics = result.metrics
    # Which epoch's weights early stopping kept, as train says it (its in-batch val_accuracy would mislead).
    kept = kept_weights_summary(result.history, metrics["kept_epoch"], metrics["stopped_early"],
                                run_config.early_stopping_patience, with_accuracy=False)
    emit(metrics, as_json, f"aligned {counted_epochs(metrics)}: loss {metrics['loss']:.4f}, "
         f"{describe_alignment(metrics)}, run in {result.run_dir}\n{kept}")


def describe_alignment(metrics: dict) -> str:
    """An align run's validation recall@1 both ways against chance, or why there is none."""
    recall = metrics.get("val_recall")
    if recall is None:
        return "no --val pairs: recall@1 not measured"
    return (f"val recall@1 text->image {recall['text_to_image']['1']:.4f}, image->text "
            f"{recall['image_to_text']['1']:.4f} (chance {metrics['val_recall_chance']:.4f})")


@app.command()
def index(
    bundle_dir: Path = typer.Argument(..., help="A dual-encoder bundle (mmkeras export of an align run)."),
    images: Path = typer.Option(..., "--images", help="Folder of images to index (searched recursively)."),
    out: Path = typer.Option(..., "--out", help="Index file to write (.npz: float16 embeddings and paths)."),
    as_json: bool = JSON_OPTION,
):
    """Embed every image of a folder with a dual-encoder bundle, for mmkeras search (no TensorFlow needed).

    Example: mmkeras index bundles/align --images photos/ --out photos.npz
    """
    from mmkeras.runtime.embedder import Embedder
    from mmkeras.runtime.image_index import build_index

    image_index = build_index(Embedder(bundle_dir), images)
    image_index.save(out)
    emit({"images": len(image_index.paths), "index": str(out)}, as_json,
         f"indexed {len(image_index.paths)} images into {out}")


@app.command()
def search(
    bundle_dir: Path = typer.Argument(..., help="The dual-encoder bundle the index was made with."),
    index_file: Path = typer.Argument(..., help="An index file from mmkeras index."),
    text: str = typer.Option(..., "--text", help="What to look for."),
    top_k: int = typer.Option(5, "--top-k", min=1, help="How many images to list."),
    as_json: bool = JSON_OPTION,
):
    """The images of an index that best fit a text, best first (exact cosine search; no TensorFlow needed).

    Example: mmkeras search bundles/align photos.npz --text "a red ring" --top-k 3
    """
    from mmkeras.runtime.embedder import Embedder
    from mmkeras.runtime.image_index import ImageIndex, search_warnings

    embedder = Embedder(bundle_dir)
    image_index = ImageIndex.load(index_file)
    hits = image_index.search(embedder.embed_text([text])[0], top_k)
    results = [{"image": str(Path(image_index.root) / path), "score": round(score, 4)} for path, score in hits]
    warnings = search_warnings(embedder.bundle.get("alignment"), hits)
    for warning in warnings:
        logger.warning("warning: %s", warning)
    emit({"results": results, "warnings": warnings}, as_json,
         "\n".join(f"{hit['score']:.4f}  {hit['image']}" for hit in results))


@app.command()
def manifest(
    folder: Path = typer.Argument(
        ..., help="Folder of photos: one folder per label (captions in .txt files beside the photos), "
        "or a Hugging Face imagefolder with a metadata.csv, metadata.jsonl or metadata.parquet; optionally in "
        "split folders (train/, validation/, test/), kept as they are."
    ),
    out: Path = typer.Option(..., "--out", help="Folder to write train.csv, val.csv and test.csv into."),
    val: float = typer.Option(VAL_SHARE, "--val", min=0.0, help="Share of each label's photos for "
                              "val.csv (0: no val.csv; not used with a validation/ folder)."),
    test: float = typer.Option(TEST_SHARE, "--test", min=0.0, help="Share of each label's photos for "
                               "test.csv (0: no test.csv; not used with a test/ folder)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split: the same folder and seed give the same split."),
    text_column: str = typer.Option("text", "--text-column", help="The metadata column holding the texts."),
    label_column: str = typer.Option(
        "label", "--label-column", help="The metadata column holding the labels (without it: the label folders)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", metavar=FLAG, help="Replace manifests that exist in --out."),
    as_json: bool = JSON_OPTION,
):
    """Write train/val/test manifests (CSV) for a folder of photos, split per label (no TensorFlow needed).

    Example: mmkeras manifest photos/ --out photos-manifests --val 0.1 --test 0.1
    """
    written = folder_manifests(folder, out, val=val, test=test, seed=seed, text_column=text_column,
                               label_column=label_column, overwrite=overwrite)
    emit(written.as_dict(), as_json, describe_manifests(written))


def describe_manifests(written: FolderManifests) -> str:
    """The manifests written and a table of the photos per label in each."""
    splits = list(written.manifests)
    labels = sorted({label for counts in written.counts.values() for label in counts})
    width = max(len("label"), *map(len, labels))
    photos = sum(sum(counts.values()) for counts in written.counts.values())
    lines = [
        f"wrote {', '.join(str(path) for path in written.manifests.values())}: {photos} photos, "
        f"{len(labels)} labels, texts from {written.texts_from}",
        f"  {'label':<{width}}" + "".join(f"{split:>7}" for split in splits),
        *(f"  {label:<{width}}" + "".join(f"{written.counts[split].get(label, 0):>7}" for split in splits)
          for label in labels),
        f"{written.without_text} photos without a text (the model sees their image alone)",
    ]
    if written.split_folders:
        kept = ", ".join(f"{split} from {path}" for split, path in written.split_folders.items())
        lines.append(f"split folders kept as they are: {kept}")
    if written.only_in_train:
        too_few = ", ".join(f"{label} ({count})" for label, count in written.only_in_train.items())
        lines.append(f"too few photos to split, all in train: {too_few}")
    return "\n".join(lines)


cache_app = typer.Typer(
    help="The feature cache of --cache-features and the images written from Parquet manifests: list or clear them.",
    no_args_is_help=True,
)
app.add_typer(cache_app, name="cache")
CACHE_DIR_OPTION = typer.Option(
    None, "--cache-dir", help="Feature cache folder.", show_default="$MMKERAS_CACHE_DIR or ~/.cache/mmkeras/features"
)


@cache_app.command("list")
def cache_list(cache_dir: Optional[Path] = CACHE_DIR_OPTION, as_json: bool = JSON_OPTION):
    """List the cached features, most recently used first, with their sizes.

    With the default cache folder, also the folder of images written from Parquet manifests' bytes
    (parquet-images, beside it): its file count and size.

    Example: mmkeras cache list
    """
    from mmkeras.data.feature_cache_folders import default_cache_dir, human_bytes, list_caches
    from mmkeras.data.parquet_manifest import embedded_images_usage

    folder = cache_dir or default_cache_dir()
    entries = list_caches(folder)
    lines = [
        f"{entry.key}  {human_bytes(entry.bytes):>9}  {entry.rows if entry.complete else 'incomplete'} rows  "
        f"last used {entry.as_dict()['last_used']}  {entry.details.get('manifest', '')}"
        f"{'  (fake-quantized, QAT)' if 'quantization' in entry.details else ''}"
        for entry in entries
    ]
    total = sum(entry.bytes for entry in entries)
    lines.append(f"{len(entries)} caches, {human_bytes(total)} in {folder}")
    images = embedded_images_usage() if covers_parquet_images(folder) else None
    if images is not None:
        lines.append(f"Parquet images: {images.files} files, {human_bytes(images.bytes)} in {images.folder}  "
                     f"last used {images.as_dict()['last_used']}")
    emit({"cache_dir": str(folder), "bytes": total, "caches": [entry.as_dict() for entry in entries],
          "parquet_images": None if images is None else images.as_dict()}, as_json, "\n".join(lines))


@cache_app.command("clear")
def cache_clear(
    cache_dir: Optional[Path] = CACHE_DIR_OPTION,
    older_than: Optional[float] = typer.Option(
        None, "--older-than", min=0.0, help="Only caches unused for this many DAYS (default: all)."
    ),
    as_json: bool = JSON_OPTION,
):
    """Delete cached features (all, or those unused for --older-than days); a cache being written is kept.

    With the default cache folder, the images written from Parquet manifests' bytes (parquet-images) go too, under
    the same --older-than; they are kept while a running process reads them. The next read writes them again.

    Example: mmkeras cache clear --older-than 30
    """
    from mmkeras.data.feature_cache_folders import clear_caches, default_cache_dir, human_bytes
    from mmkeras.data.parquet_manifest import clear_embedded_images

    folder = cache_dir or default_cache_dir()
    removed = clear_caches(folder, older_than_days=older_than)
    images = clear_embedded_images(older_than_days=older_than) if covers_parquet_images(folder) else None
    freed = sum(entry.bytes for entry in removed) + (images.bytes if images is not None else 0)
    removed_images = f" and {images.files} Parquet images from {images.folder}" if images is not None else ""
    emit({"cache_dir": str(folder), "removed": [entry.key for entry in removed], "bytes_freed": freed,
          "parquet_images_removed": None if images is None else images.as_dict()}, as_json,
         f"removed {len(removed)} caches from {folder}{removed_images} ({human_bytes(freed)})")


def covers_parquet_images(cache_dir: Path) -> bool:
    """Whether `cache list/clear` of `cache_dir` covers the Parquet images folder: only the default cache folder's
    (every run writes the images beside that one, whatever its --cache-dir; another folder's command leaves them)."""
    from mmkeras.data.feature_cache_folders import default_cache_dir

    return Path(cache_dir).absolute() == default_cache_dir().absolute()


def format_figure(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def report_environment_error(error: OSError) -> int:
    """A full disk, a read-only folder, a missing permission: the user's to fix (exit 2), named by its file."""
    where = f"{error.filename}: " if error.filename else ""
    typer.echo(f"error: {where}{error.strerror}", err=True)
    return 2


def report_internal_error(error: BaseException, debug: bool) -> int:
    """A bug, not the user's mistake: one line (the traceback with --debug), exit 1."""
    if debug:
        traceback.print_exc()
    summary = " ".join(str(error).split())
    typer.echo(f"internal error: {type(error).__name__}: {summary} (run with --debug for the traceback)", err=True)
    return 1


def skip_hint(error: Exception, argv: list[str]) -> str:
    """How to go on without the bad rows an error lists, where the command has `--on-bad-row` (else nothing):
    evaluate, compare, benchmark and explain score every row (a figure on the rows that happened to read would not
    be the test set's), and qat follows its run's setting. predict keeps a bad row, with its reason for a prediction.

    Example:
    >>> skip_hint(BadRowsError("empty label", "train.csv", 7), ["train", "--data", "train.csv"])
    ' (--on-bad-row skip leaves bad rows out)'
    >>> skip_hint(BadRowsError("empty label", "new.csv", 7), ["predict", "bundle", "--data", "new.csv"])
    ' (--on-bad-row skip predicts the others and writes bad rows with the reason)'
    >>> skip_hint(BadRowsError("empty label", "test.csv", 7), ["evaluate", "run", "--data", "test.csv"])
    ''
    """
    command = typer.main.get_command(app).commands.get(argv[0]) if argv else None
    if isinstance(error, BadRowsError) and command and any(param.name == "on_bad_row" for param in command.params):
        return SKIP_HINTS.get(argv[0], " (--on-bad-row skip leaves bad rows out)")
    return ""


# A command whose `--on-bad-row skip` does something else than leave the rows out.
SKIP_HINTS = {"predict": " (--on-bad-row skip predicts the others and writes bad rows with the reason)"}


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: run the app, map errors to exit codes."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug, verbose = "--debug" in argv, "--verbose" in argv
    argv = [arg for arg in argv if arg not in ("--debug", "--verbose")]
    if verbose:
        os.environ[VERBOSE_ENV] = "1"
    quiet_frameworks()  # before anything imports TensorFlow
    install_log_handler(logging.DEBUG if verbose else logging.INFO)
    try:
        with native_stderr_kept_off():  # framework C++ lines, however late they come (docs/design.md#cli-output)
            code = app(args=argv, prog_name="mmkeras", standalone_mode=False)
    except typer.Exit as done:
        code = done.exit_code
    except typer.TyperException as error:  # bad flags: usage errors exit with code 2
        typer.echo(f"error: {error.format_message()}", err=True)
        code = error.exit_code
    except (UserError, UntestedVersionError) as error:
        message = " ".join(str(error).splitlines())  # one line, whatever the reason holds
        typer.echo(f"error: {message}{skip_hint(error, argv)}", err=True)
        code = 2
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("interrupted", err=True)
        code = 130
    except (SystemExit, GeneratorExit):
        raise
    except OSError as error:
        code = report_environment_error(error) if error.errno in ENVIRONMENT_ERRNOS else report_internal_error(
            error, debug
        )
    except BaseException as error:  # noqa: BLE001  # a Rust panic in tokenizers is pyo3's PanicException
        code = report_internal_error(error, debug)
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
