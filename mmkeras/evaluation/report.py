"""`write_report`: one self-contained HTML page about a run, worth opening.

Sections: the final figures, the training curves (loss, accuracy, learning
rate, the best epoch marked), one evaluation per results folder of the run
(`evaluate`'s figures: confusion heatmap, per-class table, modality ablation,
reliability diagram, the precision-recall curves the results folder holds, consistency, a grid of
sample predictions with their scores, each card with the photo itself (read from predictions.csv's `image_file`), its
name as the manifest gives it and manifest line (a `cv` fold's: the line of the user's file), and
for a cross-attention run the text's attention over the image beside it; a photo gone since says so in
its place), every bundle exported or evaluated from the run wherever it was written (the run's
`bundles.json`, `runs.record_bundle`; one moved or deleted since is shown as
missing), with size, int8 op coverage, parity and latency, the versions and the
config. Every image is a PNG data URI and the page loads nothing from the
network, so the single file can be mailed or attached to a ticket. A small script
marks what the browser loaded (`data-images-loaded` on `<body>`), which the
browser test reads back.

Reads only the run folder's files, its results folders and bundle.json
files (no TensorFlow); needs matplotlib (the training extra).
"""

import base64
import csv
import html
import io
import json
import logging
from importlib import metadata
from pathlib import Path

from mmkeras import __version__
from mmkeras.config import RunConfig
from mmkeras.data.label_sets import split_labels
from mmkeras.data.parquet_manifest import embedded_image_name
from mmkeras.errors import UserError
from mmkeras.evaluation import multilabel_results, plots
from mmkeras.evaluation.results_folder import (
    MANIFEST_COLUMN,
    PR_CURVES_CHART,
    PREDICTIONS_FILE,
    RESULTS_FOLDER,
    ablation_png,
    attention_overlay_path,
    image_file,
    round_figure,
    sample_rows,
)
from mmkeras.evaluation.results_folder import METRICS_FILE as RESULTS_METRICS_FILE
from mmkeras.peak_memory import format_bytes
from mmkeras.runs import (
    CONFIG_FILE,
    HISTORY_FILE,
    METRICS_FILE,
    RETIRED_SETTINGS,
    is_align_run,
    is_run_folder,
    recorded_bundles,
    write_recorded_bundles,
)
from mmkeras.runtime.bundle import BUNDLE_FILE
from mmkeras.tasks.registry import DEFAULT_TASK, get_task
from mmkeras.tasks.task import Task

logger = logging.getLogger("mmkeras")

REPORT_FILE = "report.html"
# The sections every report has, in page order (ids of the <section> elements).
SECTIONS = ("summary", "curves", "evaluation", "bundles", "versions", "config")
# Packages whose versions the report lists, when installed.
REPORTED_PACKAGES = ("tensorflow", "keras", "keras-hub", "ai-edge-litert", "tokenizers", "numpy", "matplotlib")
# The photo on a sample card: large enough to recognise (the model's input may be 32x32).
THUMBNAIL_PIXELS = 320
# The figures table of a multilabel evaluation: (row, metrics.json key).
MULTILABEL_FIGURES = (("mAP", "mAP"), ("micro-F1", "micro_f1"), ("macro-F1", "macro_f1"),
                      ("exact match (every label right)", "exact_match"), ("rows", "n"))
# How the bundles table names a recorded bundle that is no longer there.
BUNDLE_STATUS = {"missing": "missing: moved or deleted", "replaced": "gone: the folder now holds another run's bundle"}
# Text in any script and emoji: the browser takes each character from the first font that has it
# (Debian: fonts-noto-cjk, fonts-noto-color-emoji; without them a character may show as a box). The
# emoji face comes first but covers only emoji code points: after the text fonts, DejaVu Sans's
# monochrome outlines of some emoji (🐱) would win over the colour ones.
FONTS = """@font-face{font-family:"Page Emoji";src:local("Noto Color Emoji"),local("Apple Color Emoji"),
local("Segoe UI Emoji");unicode-range:U+1F000-1FAFF,U+2600-27BF,U+2B00-2BFF,U+FE0F,U+200D}"""
FONT_FAMILY = '"Page Emoji",system-ui,"Noto Sans","Noto Sans CJK SC","Noto Sans CJK JP",sans-serif'

STYLE = FONTS + """
body{font-family:FONT_FAMILY;margin:0;padding:1.2em 2em;color:#222}
h1{margin:.2em 0}h2{border-bottom:2px solid #4c78a8;padding-bottom:.2em;margin-top:1.6em}
.figures{display:flex;flex-wrap:wrap;gap:1em 3em;align-items:flex-start}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(360px,1fr));gap:1em;align-items:start}
.charts img{width:100%;border:1px solid #ddd}
.charts.wide{grid-template-columns:repeat(auto-fit,minmax(520px,1fr))}
table{border-collapse:collapse;font-size:.9em}th,td{padding:.25em .7em;border-bottom:1px solid #eee;text-align:right}
th:first-child,td:first-child{text-align:left}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(380px,1fr));gap:.8em}
.card{border:2px solid #ccc;border-radius:6px;padding:.5em;font-size:.9em}
.card.right{border-color:#54a24b}.card.wrong{border-color:#e45756}
.pictures{display:flex;gap:.4em;align-items:flex-start}.pictures figure{flex:1;margin:0}
.pictures img{width:100%;border-radius:3px}
.pictures figcaption{font-size:.8em;color:#777}.source{font-size:.8em;color:#555;overflow-wrap:anywhere}
.missing{color:#b3261e}.pictures .missing{flex:1;margin:0}
.muted{color:#777}pre{background:#f6f6f6;padding:1em;overflow:auto}
""".replace("FONT_FAMILY", FONT_FAMILY)
# Counts the images the browser decoded, for a headless browser to read back (--dump-dom).
LOAD_SCRIPT = """
window.addEventListener('load',function(){var images=document.images,loaded=0;
for(var i=0;i<images.length;i++){if(images[i].complete&&images[i].naturalWidth>0){loaded++;}}
document.body.setAttribute('data-images-total',images.length);
document.body.setAttribute('data-images-loaded',loaded);
document.body.setAttribute('data-sections',document.querySelectorAll('section').length);});
"""


def write_report(run_dir, out=None, *, bundles=()) -> Path:
    """Write the HTML report of a run folder.

    Args:
        run_dir: a run folder written by `train` or `qat`.
        out: the HTML file to write (default: `RUN_DIR/report.html`).
        bundles: more bundle folders to list; bundles next to the run whose
            `source_run` is this run are found without it.

    Returns:
        The path written.

    Example:
    >>> write_report("runs/demo")  # doctest: +SKIP
    PosixPath('runs/demo/report.html')
    """
    run_dir = Path(run_dir)
    history_path = run_dir / HISTORY_FILE
    if not history_path.is_file():
        raise UserError(f"no {HISTORY_FILE}: not a finished run folder", path=run_dir)
    history = json.loads(history_path.read_text(encoding="utf-8"))
    metrics = read_json(run_dir / METRICS_FILE)
    found_bundles = run_bundles(run_dir, bundles)
    task = run_task(run_dir)
    sections = {
        "summary": summary_section(metrics, history, task),
        "curves": curves_section(history, task),
        "evaluation": evaluation_section(run_dir),
        "bundles": bundles_section(found_bundles),
        "versions": versions_section(),
        "config": config_section(run_dir),
    }
    body = "".join(f'<section id="{name}">{content}</section>' for name, content in sections.items())
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>mmkeras run {html.escape(run_name(run_dir))}</title>
<style>{STYLE}</style></head><body>
<h1>Run {html.escape(run_name(run_dir))}</h1><p class="muted">{html.escape(str(run_dir.resolve()))}</p>
{body}<script>{LOAD_SCRIPT}</script></body></html>
"""
    out = Path(out) if out else run_dir / REPORT_FILE
    out.write_text(page, encoding="utf-8")
    return out


def refresh_report(target) -> Path | None:
    """Rewrite the report of the run behind `target` (a run, or a bundle of a local run), if one can be drawn.

    Nothing happens where matplotlib is missing or the run (a bundle's
    `source_run`) is not on this machine. Returns the page written, or `None`.
    """
    target = Path(target)
    run_dir = _source_run(target.resolve()) if (target / BUNDLE_FILE).is_file() else target
    if run_dir is None:
        return None
    if not plots.can_plot() or not is_run_folder(run_dir) or not (run_dir / HISTORY_FILE).is_file():
        return None
    out = write_report(run_dir)
    logger.info("report refreshed: %s", out)
    return out


def record_bundle(bundle_dir) -> Path | None:
    """Add a bundle folder to the `bundles.json` of the run it was exported from, when that run is on this machine.

    `export_bundle` and `evaluate BUNDLE` call it, so the run's report and
    `compare` list every bundle of the run wherever it was written
    (`bundles/NAME` beside `runs/RUN`, another disk), and one moved or
    deleted since is shown as such. Each entry keeps the bundle's
    quantization and model size, shown for a bundle that is gone. A run
    folder that cannot be written (read-only) is logged, not an error.

    Returns:
        The run folder recorded in, or `None` (not a bundle, or its run is not here).

    Example:
    >>> record_bundle("bundles/demo")  # doctest: +SKIP
    PosixPath('/home/me/runs/demo')
    """
    bundle_dir = Path(bundle_dir).resolve()
    source = _source_run(bundle_dir)
    if source is None:
        return None
    bundle = bundle_json(bundle_dir / BUNDLE_FILE) or {}
    entry = {
        "path": str(bundle_dir),
        "quantization": bundle.get("quantization"),
        "size_bytes": (bundle.get("conversion") or {}).get("size_bytes"),
    }
    entries = [known for known in recorded_bundles(source) if known["path"] != entry["path"]]
    try:
        write_recorded_bundles(source, [*entries, entry])
    except OSError as error:
        logger.warning("could not list the bundle in %s: %s", source, error.strerror or error)
        return None
    return source


def keep_evaluation(target, *, bundle: bool):
    """After `evaluate` wrote a results folder of `target`: a bundle is listed in its run's `bundles.json`
    (`record_bundle`: the run's report and `compare` list a bundle evaluated wherever it is), and the run's
    report is refreshed (`refresh_report`)."""
    if bundle:
        record_bundle(target)
    refresh_report(target)


def _source_run(bundle_dir: Path) -> Path | None:
    """The run folder a bundle was exported from, when it is on this machine (read only)."""
    bundle = bundle_json(bundle_dir / BUNDLE_FILE)
    source = None if bundle is None else bundle_source(bundle)
    return Path(source) if source is not None and is_run_folder(source) else None


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def image_tag(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="{data_uri(png)}">'


def table(header: list[str], rows: list[list]) -> str:
    """An HTML table; floats rounded to 4 decimals, everything escaped."""
    head = "".join(f"<th>{html.escape(str(name))}</th>" for name in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(format_cell(cell))}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def format_cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, list):
        return ", ".join(format_cell(item) for item in value)
    return str(round_figure(value))


def best_epoch(history: dict) -> int | None:
    """The 1-based epoch with the lowest `val_loss` (the weights kept), or `None` without validation."""
    val_loss = history.get("val_loss")
    return None if not val_loss else int(min(range(len(val_loss)), key=val_loss.__getitem__)) + 1


def run_name(run_dir: Path) -> str:
    """The run's name in the title: its folder's, with the folder above when that is just `run` (a `cv` fold's
    `fold-K/run`: every fold's report was titled "Run run").

    Example:
    >>> run_name(Path("cv/fold-2/run")), run_name(Path("runs/demo"))
    ('fold-2/run', 'demo')
    """
    folder = run_dir.resolve()
    return f"{folder.parent.name}/{folder.name}" if folder.name == "run" else folder.name


def run_task(run_dir: Path) -> Task:
    """The run's task, which names its figures: an align run's, else config.yaml's `task` (classify when it
    cannot be read: the config section shows the file as it is)."""
    if is_align_run(run_dir):
        return get_task("align")
    try:
        return get_task(RunConfig.from_yaml(run_dir / CONFIG_FILE, ignored=RETIRED_SETTINGS).task)
    except (UserError, ValueError):
        return get_task(DEFAULT_TASK)


def summary_section(metrics: dict, history: dict, task: Task) -> str:
    epoch = best_epoch(history)
    # A run that kept its best epoch's weights says so once, not as `kept_epoch` and the best epoch with one value.
    kept_best = epoch is not None and metrics.get("kept_epoch") == epoch
    rows = [
        ["peak memory", format_bytes(value)] if key == "peak_memory_bytes" and value else [task.figure_name(key), value]
        for key, value in metrics.items()
        if not isinstance(value, (dict, list)) and not (kept_best and key == "kept_epoch")
    ]
    if epoch is not None:
        rows.append([f"{'kept' if kept_best else 'best'} epoch (lowest val_loss)", epoch])
    return "<h2>Final figures</h2>" + table(["figure", "value"], rows)


def curves_section(history: dict, task: Task) -> str:
    epoch = best_epoch(history)
    charts = [
        (("loss", "val_loss"), "loss"),
        (("accuracy", "val_accuracy"), task.accuracy_name),
        (("learning_rate",), "learning rate"),
        # `--modality-balance adaptive`'s record (`ModalityBalance.epoch_summary`); other runs have none.
        (("text_update_scale", "image_update_scale"), "OGM step scale"),
        (("text_drop_rate", "image_drop_rate"), "OPM drop rate"),
        (("text_probe_score", "image_probe_score"), "probe true-class probability"),
    ]
    images = "".join(
        image_tag(plots.curve_png(history, keys, ylabel=label, best_epoch=epoch, name=task.figure_name),
                  f"{label} per epoch")
        for keys, label in charts
        if any(key in history for key in keys)
    )
    return f'<h2>Training curves</h2><div class="charts">{images}</div>'


def evaluation_section(run_dir: Path) -> str:
    folders = sorted(path.parent for path in (run_dir / RESULTS_FOLDER).glob(f"*/{RESULTS_METRICS_FILE}"))
    if not folders:
        return '<h2>Evaluation</h2><p class="muted">Not evaluated yet: mmkeras evaluate RUN_DIR --data TEST.csv</p>'
    return "<h2>Evaluation</h2>" + "".join(shown_evaluation(folder) for folder in folders)


def shown_evaluation(folder: Path) -> str:
    """A results folder's part of the page: a single-label or multilabel evaluation (`per_label` figures), or,
    where its files cannot be read (damaged, or written by another version), a line saying so."""
    try:
        figures = read_json(folder / RESULTS_METRICS_FILE)
        return multilabel_evaluation(folder, figures) if "per_label" in figures else one_evaluation(folder, figures)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, csv.Error) as error:
        logger.warning("the report leaves out %s: %s", folder, error)
        reason = f"{type(error).__name__}: {error}"
        return (f"<h3>On {html.escape(folder.name)}</h3>"
                f'<p class="missing">not shown: its files could not be read ({html.escape(reason)})</p>')


def one_evaluation(folder: Path, figures: dict) -> str:
    labels = list(figures["per_class"])
    ablation, consistency = figures["modality_ablation"], figures["consistency"]
    headline = [
        ["accuracy", figures["accuracy"]],
        ["macro-F1", figures["macro_f1"]],
        # Results folders written before average precision was measured have none.
        *([["mean average precision (one class against the rest)", figures["macro_average_precision"]]]
          if "macro_average_precision" in figures else []),
        *[[name.replace("_", "-") + " accuracy", value] for name, value in figures["top_k_accuracy"].items()],
        ["expected calibration error (15 bins)", figures["calibration"]["ece"]],
        ["text only (image removed): accuracy", ablation["text_only"]["accuracy"]],
        ["image only (text removed): accuracy", ablation["image_only"]["accuracy"]],
        ["fused = text-only prediction", consistency["agreement_with_text_only"]],
        ["fused = image-only prediction", consistency["agreement_with_image_only"]],
        ["correct rows flipped by removing the image", consistency["flipped_without_image"]],
        ["correct rows flipped by removing the text", consistency["flipped_without_text"]],
        ["rows", figures["n"]],
    ]
    per_class = [
        [label, values["precision"], values["recall"], values["f1"], values.get("average_precision"),
         values["support"], ablation["text_only"]["per_class_recall"][label],
         ablation["image_only"]["per_class_recall"][label]]
        for label, values in figures["per_class"].items()
    ]
    images = "".join(
        [
            image_tag(plots.confusion_png(figures["confusion_matrix"], labels), "confusion matrix"),
            image_tag(plots.confusion_png(figures["confusion_matrix"], labels, normalized=True),
                      "normalised confusion matrix"),
            image_tag(ablation_png(figures), "modality ablation"),
            image_tag(plots.reliability_png(figures["calibration"]), "reliability diagram"),
            saved_chart(folder, PR_CURVES_CHART, "precision-recall curves"),
        ]
    )
    return (
        f"<h3>On {html.escape(folder.name)}</h3>"
        + f'<div class="figures">{table(["figure", "value"], headline)}'
        + table(["class", "precision", "recall", "F1", "average precision", "support", "text-only recall",
                 "image-only recall"], per_class)
        + "</div>"
        + f'<div class="charts wide">{images}</div>'
        + samples_grid(folder)
    )


def multilabel_evaluation(folder: Path, figures: dict) -> str:
    """A multilabel results folder: the figures, the per-label table and chart, and sample rows' label sets."""
    headline = [[name, figures[key]] for name, key in MULTILABEL_FIGURES]
    per_label = [
        [label, *(values.get(column) for column in multilabel_results.PER_LABEL_COLUMNS)]
        for label, values in figures["per_label"].items()
    ]
    header = ["label", "threshold", "precision", "recall", "F1", "average precision", "support"]
    charts = [
        image_tag(multilabel_results.per_label_png(figures), "precision, recall and F1 per label"),
        saved_chart(folder, PR_CURVES_CHART, "precision-recall curves"),
    ]
    return (
        f"<h3>On {html.escape(folder.name)}</h3>"
        + f'<div class="figures">{table(["figure", "value"], headline)}{table(header, per_label)}</div>'
        + f'<div class="charts wide">{"".join(charts)}</div>'
        + label_sets_grid(folder, {label: values["threshold"] for label, values in figures["per_label"].items()})
    )


def saved_chart(folder: Path, name: str, alt: str) -> str:
    """A chart `evaluate` saved in the results folder, as it saved it, or a line saying it is not there.

    The precision-recall curves are drawn from the scores at full
    precision, which predictions.csv rounds to 4 decimals: redrawn from
    there, they could disagree with the average precision in the tables.
    """
    path = folder / name
    if not path.is_file():
        return f'<p class="muted">No {html.escape(name)} in this results folder: evaluate again to draw it.</p>'
    return image_tag(path.read_bytes(), alt)


def samples_grid(folder: Path) -> str:
    """Cards for the right and wrong predictions `sample_rows` picks."""
    rows = sample_rows(predictions(folder))
    right = sum(row["correct"] == "1" for row in rows)
    cards = "".join(sample_card(row, folder) for row in rows)
    return cards_grid(f"Sample predictions ({right} right, {len(rows) - right} wrong)", cards)


def label_sets_grid(folder: Path, thresholds: dict[str, float]) -> str:
    """Cards for the exact and wrong label sets `multilabel_results.sample_rows` picks."""
    rows = multilabel_results.sample_rows(predictions(folder))
    exact = sum(row["exact"] == "1" for row in rows)
    cards = "".join(label_set_card(row, folder, thresholds) for row in rows)
    return cards_grid(f"Sample predictions ({exact} exact, {len(rows) - exact} with a label wrong)", cards)


def predictions(folder: Path) -> list[dict]:
    """The rows of a results folder's predictions.csv (none where it has no such file)."""
    path = folder / PREDICTIONS_FILE
    if not path.is_file():
        return []
    with path.open(encoding="utf-8", newline="") as file:
        return list(csv.DictReader(file))


def cards_grid(title: str, cards: str) -> str:
    return f'<h4>{html.escape(title)}</h4><div class="cards">{cards}</div>' if cards else ""


def sample_card(row: dict, folder: Path) -> str:
    """The photo (and the attention over it), the text, the labels, the file name and the manifest line."""
    kind = "right" if row["correct"] == "1" else "wrong"
    return (
        f'<div class="card {kind}">{card_example(row, folder)}'
        f"<div>true <b>{html.escape(row['label'])}</b>, predicted <b>{html.escape(row['predicted'])}</b> "
        f"({float(row['score']):.3f})</div>"
        f'<div class="muted">text only: {html.escape(row["text_only_predicted"])}, '
        f"image only: {html.escape(row['image_only_predicted'])}</div></div>"
    )


def label_set_card(row: dict, folder: Path, thresholds: dict[str, float]) -> str:
    """The example, the true and predicted label sets, and each label of either set: its score against its
    threshold."""
    true, predicted = split_labels(row["label"]), split_labels(row["predicted"])
    shown = list(dict.fromkeys([*true, *predicted]))
    scores = ", ".join(score_against_threshold(label, float(row[f"score_{label}"]), thresholds[label])
                       for label in shown)
    missed = [label for label in true if label not in predicted]
    extra = [label for label in predicted if label not in true]
    errors = "; ".join(f"{name} {', '.join(found)}" for name, found in (("missed", missed), ("extra", extra)) if found)
    kind = "right" if row["exact"] == "1" else "wrong"
    return (
        f'<div class="card {kind}">{card_example(row, folder)}'
        f"<div>true <b>{html.escape(label_set(true))}</b>, predicted <b>{html.escape(label_set(predicted))}</b></div>"
        + (f'<div class="missing">{html.escape(errors)}</div>' if errors else "")
        + f'<div class="muted">scores: {html.escape(scores or "–")}</div></div>'
    )


def score_against_threshold(label: str, score: float, threshold: float) -> str:
    """A label's score beside the threshold it is cut at.

    Example:
    >>> score_against_threshold("ring", 0.158, 0.1977), score_against_threshold("red", 0.9, 0.5)
    ('ring 0.158 < 0.198', 'red 0.900 ≥ 0.500')
    """
    return f"{label} {score:.3f} {'≥' if score >= threshold else '<'} {threshold:.3f}"


def label_set(labels: list[str]) -> str:
    """A label set as a card shows it.

    Example:
    >>> label_set(["red", "ring"]), label_set([])
    ('{red, ring}', '{} (no label)')
    """
    return "{" + ", ".join(labels) + "}" + ("" if labels else " (no label)")


def card_example(row: dict, folder: Path) -> str:
    """The top of a sample card: the photo (and the attention over it), the file name and line, the text."""
    shown, read = row["image"], image_file(row)
    pictures = []
    if read and Path(read).is_file():
        pictures.append(figure(thumbnail(Path(read)), "photo"))
    elif read:
        pictures.append(f'<p class="missing">{html.escape(missing_image(Path(read)))}</p>')
    attention = attention_overlay_path(folder, row["line"])
    if attention.is_file():
        pictures.append(figure(attention.read_bytes(), "attention over the image"))
    picture = f'<div class="pictures">{"".join(pictures)}</div>' if pictures else '<p class="muted">no image</p>'
    source = f"{Path(shown).name}, " if shown else ""
    place = f"line {row['line']} of {row_file(row, folder)}"
    # A missing text is said as a missing image is, outside quotes: “(no text)” read as a caption of that wording.
    text = f"<div>“{html.escape(row['text'])}”</div>" if row["text"] else '<div class="muted">no text</div>'
    return f'{picture}<div class="source">{html.escape(source + place)}</div>{text}'


def row_file(row: dict, folder: Path) -> str:
    """The name of the file a predictions.csv row's `line` is in (for a `cv` fold: the user's manifest).

    A results folder written before predictions.csv's `manifest` column is
    named after its manifest (`results_dir`): its name stands in.

    Example:
    >>> row_file({"line": "7", "manifest": "/data/train.csv"}, Path("cv/fold-1/run/results/test"))
    'train.csv'
    >>> row_file({"line": "3"}, Path("cv/fold-1/run/results/test"))
    'test'
    """
    return Path(row[MANIFEST_COLUMN]).name if row.get(MANIFEST_COLUMN) else folder.name


def missing_image(read: Path) -> str:
    """What a sample card says in place of a photo whose file is gone.

    Example:
    >>> missing_image(Path("/photos/cats/001.jpg"))
    'image not found: /photos/cats/001.jpg'
    """
    if embedded_image_name(read) is None:
        return f"image not found: {read}"
    return "photo not shown: its copy in the Parquet image cache was cleared (mmkeras cache clear); evaluate again"


def figure(png: bytes, caption: str) -> str:
    return f"<figure>{image_tag(png, caption)}<figcaption>{html.escape(caption)}</figcaption></figure>"


def thumbnail(image_path: Path) -> bytes:
    """The photo upright (EXIF orientation applied) as a PNG of at most `THUMBNAIL_PIXELS` a side."""
    from PIL import Image, ImageOps

    with Image.open(image_path) as image:
        image = ImageOps.exif_transpose(image).convert("RGB")
        image.thumbnail((THUMBNAIL_PIXELS, THUMBNAIL_PIXELS), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
    return buffer.getvalue()


def run_bundles(run_dir: Path, extra=()) -> list[dict]:
    """The bundles of a run: those its `bundles.json` records (wherever written), those beside it (or one
    level into a sibling folder, like `bundles/NAME`, for runs exported before the record) and `extra`.

    Returns:
        One dict per bundle folder, sorted by path: `path`, `bundle` (its bundle.json, `None` when gone) and
        `status`: `present`, `missing` (moved or deleted since it was recorded) or `replaced` (the folder now
        holds a bundle of another run); `quantization` and `size_bytes` as recorded, for a bundle that is gone.
    """
    run = run_dir.resolve()
    neighbours = [*run.parent.glob(f"*/{BUNDLE_FILE}"), *run.parent.glob(f"*/*/{BUNDLE_FILE}")]
    found = {}
    for path in [*neighbours, *(Path(folder) / BUNDLE_FILE for folder in extra)]:
        bundle = bundle_json(path)
        if bundle is not None and bundle_source(bundle) == run:
            found[path.parent.resolve()] = {"path": path.parent.resolve(), "bundle": bundle, "status": "present"}
    for entry in recorded_bundles(run):
        folder = Path(entry["path"])
        if folder in found:
            continue
        bundle = bundle_json(folder / BUNDLE_FILE)
        status = "missing" if bundle is None else "present" if bundle_source(bundle) == run else "replaced"
        found[folder] = {"path": folder, "bundle": bundle if status == "present" else None, "status": status,
                         "quantization": entry.get("quantization"), "size_bytes": entry.get("size_bytes")}
    return [found[folder] for folder in sorted(found)]


def bundle_json(path: Path) -> dict | None:
    """A bundle.json's content, or `None` when it is missing or damaged (a neighbour's is not the report's business)."""
    try:
        bundle = read_json(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return bundle if isinstance(bundle, dict) and bundle else None


def bundle_source(bundle: dict) -> Path | None:
    source = bundle.get("source_run")
    return Path(source).resolve() if isinstance(source, str) and source else None


def bundles_section(bundles: list[dict]) -> str:
    if not bundles:
        return '<h2>Bundles</h2><p class="muted">None exported yet: mmkeras export RUN_DIR --out BUNDLE_DIR</p>'
    rows = []
    for entry in bundles:
        folder, bundle = entry["path"], entry["bundle"]
        if bundle is None:
            size = entry.get("size_bytes")
            rows.append([folder.name, BUNDLE_STATUS[entry["status"]], entry.get("quantization"),
                         None if size is None else f"{size / 1024:.0f} KB", None, None, None, None, None, str(folder)])
            continue
        conversion = bundle.get("conversion") or {}
        compute = (conversion.get("ops") or {}).get("compute_ops") or {}
        quantized = compute.get("int8", 0) + compute.get("int16x8", 0)
        parity = conversion.get("parity") or {}
        evaluations = [read_json(path) for path in sorted(folder.glob(f"{RESULTS_FOLDER}/*/{RESULTS_METRICS_FILE}"))]
        rows.append(
            [
                folder.name,
                "present",
                bundle.get("quantization"),
                None if "size_bytes" not in conversion else f"{conversion['size_bytes'] / 1024:.0f} KB",
                None if not compute else f"{quantized} of {compute.get('total', 0)}",
                parity.get("label_agreement"),
                parity.get("max_abs_logit_diff"),
                # A multilabel bundle's evaluation has no accuracy: its exact match is the figure of the same kind.
                [figures.get("accuracy", figures.get("exact_match")) for figures in evaluations
                 if "accuracy" in figures or "exact_match" in figures] or None,
                [figures.get("model_ms_per_row") for figures in evaluations] or None,
                str(folder),
            ]
        )
    header = ["bundle", "status", "quantization", "size", "quantized compute ops", "parity: label agreement",
              "parity: max logit diff", "accuracy or exact match (evaluate)", "ms per row (evaluate)", "folder"]
    return "<h2>Bundles</h2>" + table(header, rows)


def versions_section() -> str:
    rows = [["mmkeras", __version__]]
    for package in REPORTED_PACKAGES:
        try:
            rows.append([package, metadata.version(package)])
        except metadata.PackageNotFoundError:
            continue
    return "<h2>Versions</h2>" + table(["package", "version"], rows)


def config_section(run_dir: Path) -> str:
    config_path = run_dir / CONFIG_FILE
    config = config_path.read_text(encoding="utf-8") if config_path.is_file() else ""
    return f"<h2>Config</h2><pre>{html.escape(config)}</pre>"
