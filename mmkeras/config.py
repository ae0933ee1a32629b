"""`RunConfig`: the single source of truth for a training run.

The CLI flags, a YAML `--config` file and the Python API all fill this one
dataclass; the resolved config is saved in the run folder as `config.yaml`.
Precedence: dataclass defaults < YAML file < explicit flags / keyword args.
Each setting the CLI offers carries its one-line `--help` text in its field
(`setting`, read with `setting_help`), so that text is written once, here.
"""

import dataclasses
import math
from pathlib import Path
from typing import Any

import yaml

from mmkeras.errors import UserError
from mmkeras.preprocessing.image import MAX_IMAGE_PIXELS

FUSIONS = ("cross-attention", "concat", "gated")
FREEZE_CHOICES = ("none", "text", "vision", "both")
STRATEGIES = ("auto", "one", "mirrored", "multi-worker", "tpu")
OPTIMIZERS = ("adamw", "adam", "sgd")
ON_BAD_ROW = ("fail", "skip")
MIXED_PRECISION = ("auto", "off", "float16", "bfloat16")
CLASS_WEIGHTS = ("none", "balanced")
AUGMENTATIONS = ("none", "photo")
MODALITY_BALANCE = ("none", "aux", "adaptive")
# classify: one label per row; match: does the text fit the image (two labels: match/mismatch, 1/0, true/false);
# multilabel: a label cell lists several labels separated by `|`.
TASKS = ("classify", "match", "multilabel")
CACHE_DTYPES = ("float16", "float32")


def setting(default, help: str):
    """A `RunConfig` field whose CLI option (`mmkeras train --NAME`) shows `help`: written once, beside its default."""
    return dataclasses.field(default=default, metadata={"help": help})


def setting_help(name: str) -> str:
    """The one-line `--help` text of `RunConfig` field `name` (`setting`).

    Example:
    >>> setting_help("epochs")
    'Training epochs.'
    """
    return RunConfig.__dataclass_fields__[name].metadata["help"]


# NumPy's and TensorFlow's seeds are 32-bit.
_MAX_SEED = 2**32 - 1
# The numeric field types of RunConfig, and the Python types their values may have.
_NUMBER_KINDS: dict[object, tuple[type[int] | type[float], ...]] = {
    int: (int,), float: (int, float), int | None: (int,), float | None: (int, float)
}


@dataclasses.dataclass
class RunConfig:
    """Everything that defines a training run.

    Args:
        data: training manifest (CSV or JSONL with `text`, `image`, `label`).
        val: validation manifest; without it no early stopping or best-keeping.
        out: the run folder to write.
        text_backbone: keras-hub preset name, local preset folder, Hugging
            Face-format folder, or `tiny` (random, built offline).
        vision_backbone: the same for images; `tiny` (a small CNN),
            `tiny-vit` and `tiny-mobilenet` are built offline.
        fusion: `cross-attention`, `concat` or `gated`.
        sequence_length: token ids per text, special tokens included (longer
            texts are truncated, and counted in train's `texts_truncated`);
            `None` takes the text backbone's limit, at most 128 (32 for
            `tiny`).
        fusion_dim: width of the fused representation.
        num_heads: attention heads of the cross-attention fusion.
        dropout: dropout rate in the fusion and the head.
        modality_dropout: probability of hiding the text or the image of a
            training example, so the model holds up when a modality is
            missing on the device (0 = off).
        epochs: training epochs.
        batch_size: global batch size.
        learning_rate: peak learning rate; `None` picks 5e-5 when the
            weights of a pretrained backbone train, else 1e-3 (random or
            frozen backbones, LoRA).
        new_layers_lr_scale: when the weights of a pretrained backbone
            train, the layers that start from scratch (fusion, head, a random
            backbone) train at this many times `learning_rate` (default 20:
            1e-3 next to the 5e-5 of the pretrained weights); 1 trains
            everything at one rate.
        optimizer: `adamw`, `adam` or `sgd`.
        weight_decay: decoupled weight decay (adamw, sgd).
        warmup_fraction: share of the steps spent warming up linearly before
            the cosine decay.
        early_stopping_patience: epochs without `val_loss` improvement before
            stopping; 0 disables early stopping.
        seed: seed for weights, shuffling and dropout.
        deterministic: make TensorFlow ops deterministic (slower).
        on_bad_row: `fail` lists every bad row (the first 20 and a count)
            and stops before training; `skip` drops them and lists them in
            the run folder's `skipped_rows.csv`.
        strategy: tf.distribute strategy: `auto`, `one`, `mirrored`, `multi-worker`, `tpu`.
        freeze: which backbones to keep frozen: `none`, `text`, `vision`, `both`.
        lora_rank: LoRA rank for the backbones (0 = no LoRA).
        cache_features: compute frozen backbones' outputs once and reuse them.
        cache_dir: the feature cache folder; `None` is the user cache folder
            (`$XDG_CACHE_HOME` or `~/.cache`, then `mmkeras/features`).
        cache_dtype: `float16` (half the disk and reads; rounds the
            features, docs/design.md#feature-cache-float16) or `float32`.
        jit_compile: compile training steps with XLA where every layer
            supports it (costs a compile of some seconds up front); `None`
            (the default) uses XLA on GPUs only: on the 2-core AMD EPYC CPU
            of this project's machines it made training slower (0.3-0.8x,
            benchmarks/README.md).
        mixed_precision: `auto` (mixed float16 on a GPU, off on a CPU),
            `off`, `float16` or `bfloat16` (Keras `mixed_*` policies; logits
            and loss stay float32, float16 uses loss scaling).
        remat: recompute the vision backbone's activations on the backward
            pass, segment by segment, instead of keeping them (gradient
            checkpointing, `mmkeras.training.rematerialization`): less
            memory for more time; refused with `freeze` `vision` or `both`,
            which train no vision backbone.
        gradient_accumulation: batches of `batch_size` per optimizer update;
            the update equals one batch this many times bigger.
        class_weight: `none`, or `balanced` (each class weighs
            rows / (classes * rows of that class) in the loss).
        augment: `none`, or `photo`: each training image is randomly
            cropped (25-100% of its area) and resized back, flipped left to
            right and colour-jittered, differently every epoch, seeded by
            (seed, epoch, row); never at evaluation, calibration or export.
            Flipping assumes a text does not say left or right.
        checkpoint_steps: also write a resume checkpoint every this many
            optimizer updates (0: only at the end of each epoch).
        max_image_pixels: an image with more pixels (width x height, read
            from its header before decoding) is a bad row; the bundle's
            runtime refuses it too.
        modality_balance: keep one modality from dominating: `none`, `aux`
            (text-only and image-only heads with weighted auxiliary losses) or
            `adaptive` (on-the-fly modulation, OGM and OPM: the dominant
            backbone learns slower and its modality is hidden in some rows);
            `mmkeras.training.modality_balance`.
        aux_loss_weight: under `modality_balance` `aux`, each unimodal
            head's cross-entropy counts this many times in the loss (0: the
            heads train nothing into the backbones); another value than the
            default is refused with the other modes, which have no such loss.
        task: `classify` (one label per row) or `match` (whether the text
            fits the image: a probability from the fusion together with the
            aligned embeddings' similarity), or `multilabel` (label cells
            list several labels separated by `|`; sigmoid outputs, per-label
            thresholds tuned on the validation rows).
        init_from: an align run (`mmkeras align`) whose backbones,
            tokenizer, projections and temperature the model starts from.
        embedding_dim: width of the shared text-image embedding space (an
            align run's projections, and the match task's).
        image_size: side of the square images the vision backbone sees;
            `None` keeps a checkpoint folder's own size (32 for the built-in
            `tiny` backbones). A checkpoint with a fixed input shape (ViT,
            DINOv2) takes only its own size.
        text_column: the manifest column (CSV header or JSONL key) holding
            the texts; later commands on the run read manifests with the
            same column names unless told otherwise.
        image_column: the column holding the image paths.
        label_column: the column holding the labels.
        data_service: a tf.data service dispatcher, `grpc://HOST:PORT`, whose
            workers decode and batch the training images (the same batches
            in the same order as locally; `mmkeras.data.data_service`);
            `None`: this host's CPUs do.

    Example:
    >>> config = RunConfig(data="samples/train.csv", out="runs/demo", epochs=3)
    >>> config.fusion
    'cross-attention'
    """

    data: str | None = None
    val: str | None = None
    out: str | None = None
    text_backbone: str = setting(
        "tiny",
        "keras-hub preset, preset folder, Hugging Face folder, or 'tiny' (random, offline).",
    )
    vision_backbone: str = setting(
        "tiny",
        "keras-hub preset, preset folder, HF folder, 'tiny' (small CNN), 'tiny-vit', 'tiny-mobilenet'.",
    )
    fusion: str = setting("cross-attention", "How text and image tokens are joined.")
    sequence_length: int | None = setting(
        None,
        "Token ids per text, special tokens included (longer texts are cut and counted).",
    )
    fusion_dim: int = 64
    num_heads: int = 4
    dropout: float = 0.1
    modality_dropout: float = setting(0.0, "Probability of hiding the text or the image of a training example.")
    epochs: int = setting(10, "Training epochs.")
    batch_size: int = setting(32, "Global batch size (across replicas and workers).")
    learning_rate: float | None = setting(None, "Peak learning rate (warmup, then cosine decay).")
    new_layers_lr_scale: float = setting(
        20.0,
        "Fine-tuning a pretrained backbone: fusion and head learn this many times faster.",
    )
    optimizer: str = "adamw"
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    early_stopping_patience: int = setting(5, "Stop after N epochs without a lower val_loss (0: never; needs --val).")
    seed: int = setting(0, "Seed for weights, shuffling and dropout.")
    deterministic: bool = setting(False, "Deterministic TensorFlow ops (slower).")
    on_bad_row: str = setting(
        "fail",
        "A bad row (unreadable image, empty label, malformed line, ...): fail lists every one and stops; skip drops "
        "them and lists them in RUN_DIR/skipped_rows.csv.",
    )
    strategy: str = setting("auto", "tf.distribute strategy: auto picks mirrored with several GPUs, else one device.")
    freeze: str = setting("none", "Backbones whose weights stay as loaded.")
    lora_rank: int = setting(0, "LoRA adapters of this rank on the backbones (0: off).")
    cache_features: bool = setting(False, "Run frozen backbones once and train on their stored outputs.")
    cache_dir: str | None = setting(None, "Feature cache folder (--cache-features).")
    cache_dtype: str = setting("float16", "Stored feature precision: float16 (half the size) or float32 (exact).")
    jit_compile: bool | None = None
    mixed_precision: str = setting("auto", "auto: mixed float16 on a GPU, bfloat16 on a TPU, float32 on a CPU.")
    remat: bool = setting(
        False, "Recompute the vision backbone's activations on the backward pass: less memory, slower steps."
    )
    gradient_accumulation: int = setting(
        1,
        "Batches per optimizer update (the update of a batch this many times bigger).",
    )
    class_weight: str = setting("none", "balanced: weigh each class's loss by rows / (classes * rows of the class).")
    checkpoint_steps: int = setting(0, "Also checkpoint every N optimizer updates (0: each epoch only).")
    max_image_pixels: int = MAX_IMAGE_PIXELS
    augment: str = setting("none", "photo: random resized crop, flip and colour jitter of training images (seeded).")
    modality_balance: str = setting(
        "none",
        "Keep one modality from dominating: auxiliary unimodal losses, or OGM/OPM modulation.",
    )
    aux_loss_weight: float = setting(
        0.5, "--modality-balance aux: weight of each unimodal head's loss beside the fused head's."
    )
    task: str = setting(
        "classify",
        "classify; match: does the text fit the image (2 labels); multilabel: label cells like a|b.",
    )
    init_from: str | None = setting(
        None,
        "Start from an align run's backbones, tokenizer and projections (mmkeras align).",
    )
    embedding_dim: int = setting(64, "Width of the shared embedding space.")
    image_size: int | None = setting(None, "Side of the square images the vision backbone sees.")
    text_column: str = "text"
    image_column: str = "image"
    label_column: str = "label"
    data_service: str | None = setting(
        None,
        "grpc://HOST:PORT of a tf.data service dispatcher whose workers decode the training images (mmkeras "
        "data-service); the same batches as without it.",
    )

    def __post_init__(self):
        self.validate()

    def validate(self):
        """Raise `UserError` naming the first setting that is out of range."""
        self._check_types()
        choices = {
            "fusion": FUSIONS,
            "freeze": FREEZE_CHOICES,
            "strategy": STRATEGIES,
            "optimizer": OPTIMIZERS,
            "on_bad_row": ON_BAD_ROW,
            "mixed_precision": MIXED_PRECISION,
            "class_weight": CLASS_WEIGHTS,
            "augment": AUGMENTATIONS,
            "modality_balance": MODALITY_BALANCE,
            "task": TASKS,
            "cache_dtype": CACHE_DTYPES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise UserError(f"must be one of {', '.join(allowed)}, got {getattr(self, name)!r}", setting=name)
        positive = (
            "sequence_length",
            "fusion_dim",
            "num_heads",
            "epochs",
            "batch_size",
            "gradient_accumulation",
            "max_image_pixels",
            "embedding_dim",
            "image_size",
        )
        for name in positive:
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UserError(f"must be at least 1, got {getattr(self, name)}", setting=name)
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"must be in [0, 1), got {self.dropout}", setting="dropout")
        if self.task == "multilabel" and self.class_weight != "none":
            raise UserError("does not apply to multilabel: each label has its own sigmoid loss", setting="class_weight")
        if self.cache_features and (self.freeze == "none" or self.lora_rank):
            raise UserError(
                "needs frozen backbones (freeze text, vision or both) and no LoRA", setting="cache_features"
            )
        if self.cache_features and self.augment != "none":
            raise UserError(
                "computes each image's features once; it cannot augment them (augment none)", setting="cache_features"
            )
        if self.modality_balance != "none" and self.cache_features:
            raise UserError(
                "needs the backbones' tokens in training: not with cache_features", setting="modality_balance"
            )
        if self.data_service and (self.cache_features or self.strategy == "multi-worker"):
            raise UserError("data_service feeds one trainer's image pipeline: not with cache_features or multi-worker")
        self._check_aux_loss_weight()
        if self.remat and self.freeze in ("vision", "both"):
            raise UserError(
                f"recomputes the vision backbone on the backward pass; with freeze {self.freeze} it has no gradients",
                setting="remat",
            )
        if not 0.0 <= self.modality_dropout <= 1.0:
            raise UserError(f"must be in [0, 1], got {self.modality_dropout}", setting="modality_dropout")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise UserError(f"must be in [0, 1), got {self.warmup_fraction}", setting="warmup_fraction")
        if self.learning_rate is not None and self.learning_rate <= 0:
            raise UserError(f"must be positive, got {self.learning_rate}", setting="learning_rate")
        if self.new_layers_lr_scale <= 0:
            raise UserError(f"must be positive, got {self.new_layers_lr_scale}", setting="new_layers_lr_scale")
        if not 0 <= self.seed <= _MAX_SEED:
            raise UserError(f"must be between 0 and {_MAX_SEED}, got {self.seed}", setting="seed")
        self._check_columns()
        for name in ("lora_rank", "early_stopping_patience", "checkpoint_steps"):
            if getattr(self, name) < 0:
                raise UserError(f"must not be negative, got {getattr(self, name)}", setting=name)

    def _check_aux_loss_weight(self):
        """Not negative, and only set with `modality_balance` `aux`: the other modes have no auxiliary loss."""
        if self.aux_loss_weight < 0:
            raise UserError(f"must not be negative, got {self.aux_loss_weight}", setting="aux_loss_weight")
        default = RunConfig.__dataclass_fields__["aux_loss_weight"].default
        if self.modality_balance != "aux" and self.aux_loss_weight != default:
            raise UserError(
                f"applies to modality_balance aux only, got modality_balance {self.modality_balance}",
                setting="aux_loss_weight",
            )

    def _check_columns(self):
        """The three column names: non-empty text, and three different columns."""
        names = {role: getattr(self, f"{role}_column") for role in ("text", "image", "label")}
        for role, name in names.items():
            if not isinstance(name, str) or not name.strip():
                raise UserError(f"must be a column name, got {name!r}", setting=f"{role}_column")
        if len(set(names.values())) < len(names):
            raise UserError(f"text_column, image_column and label_column must differ, got {', '.join(names.values())}")

    @property
    def columns(self) -> dict[str, str]:
        """`{role: column name}` of the manifests (`text`, `image`, `label` roles), for `read_manifest`."""
        return {"text": self.text_column, "image": self.image_column, "label": self.label_column}

    def _check_types(self):
        """Numbers must be numbers, and every float finite: NaN passes every `<` check and trains to NaN."""
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            kinds = _NUMBER_KINDS.get(field.type)
            if kinds is None or (value is None and field.type in (int | None, float | None)):
                continue
            if isinstance(value, bool) or not isinstance(value, kinds):
                raise UserError(f"must be a number, got {value!r}", setting=field.name)
            if not math.isfinite(value):
                raise UserError(f"must be a finite number, got {value}", setting=field.name)

    def replace(self, **overrides: Any) -> "RunConfig":
        """A copy with `overrides` applied; `None` values are ignored (flag not given)."""
        given = {key: value for key, value in overrides.items() if value is not None}
        return dataclasses.replace(self, **given)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config", *, ignored=()) -> "RunConfig":
        """Build from a mapping; keys may use `-` or `_`. Unknown keys are an error, except `ignored` ones."""
        known = {field.name for field in dataclasses.fields(cls)}
        normalized = {str(key).replace("-", "_"): value for key, value in values.items()}
        normalized = {key: value for key, value in normalized.items() if key not in ignored}
        if "resume" in normalized:
            raise UserError("resume is not a setting: pass --resume (or resume=True) to the command", path=source)
        unknown = sorted(set(normalized) - known)
        if unknown:
            raise UserError(f"unknown setting(s) {', '.join(unknown)}", path=source)
        try:
            return cls(**normalized)
        except TypeError as error:
            raise UserError(str(error), path=source) from None

    @classmethod
    def from_yaml(cls, path: str | Path, *, ignored=()) -> "RunConfig":
        """Read a YAML run config (a mapping of setting names to values); `ignored` keys are dropped."""
        path = Path(path)
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except OSError as error:
            raise UserError(f"cannot read config: {error.strerror}", path=path) from None
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            row = None if mark is None else mark.line + 1
            raise UserError(f"invalid YAML: {getattr(error, 'problem', error)}", path=path, row=row) from None
        if not isinstance(values, dict):
            raise UserError("a run config must be a mapping of settings", path=path)
        return cls.from_dict(values, source=str(path), ignored=ignored)

    def save_yaml(self, path: str | Path):
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")
