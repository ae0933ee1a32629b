"""The evaluation and report figures, drawn with matplotlib as PNG bytes.

matplotlib comes with the training extra; the device-only install evaluates
bundles without it (`can_plot()` is false there and no figure is drawn).

Example:
>>> png = confusion_png([[3, 1], [0, 4]], ["cat", "dog"])  # doctest: +SKIP
>>> png[:4]  # doctest: +SKIP
b'\\x89PNG'
"""

import functools
import importlib.util
import io
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

logger = logging.getLogger("mmkeras")

DPI = 110
# Class names and titles in any script: matplotlib takes a glyph DejaVu Sans lacks from the next family
# listed. Noto Sans CJK (Debian: fonts-noto-cjk) covers Chinese, Japanese and Korean; emoji fall back to
# DejaVu Sans's monochrome outlines (matplotlib cannot draw colour emoji fonts).
FALLBACK_FONT_FAMILY = "Noto Sans CJK JP"
FALLBACK_FONT_FILE = "NotoSansCJK-Regular.ttc"
# Precision-recall curves: up to this many share one axes (one colour each in matplotlib's ten-colour cycle);
# more are drawn as small multiples, one per panel, in rows of PANEL_COLUMNS, at most PANELS_AT_MOST of them.
CURVES_PER_AXES = 10
PANEL_COLUMNS = 5
PANELS_AT_MOST = 40


def can_plot() -> bool:
    """Whether matplotlib is installed (found without importing it)."""
    return importlib.util.find_spec("matplotlib") is not None


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on training servers
    import matplotlib.pyplot as plt

    _use_fallback_font(matplotlib)
    return plt


@functools.cache
def _use_fallback_font(matplotlib):
    """Put the CJK font after DejaVu Sans, registering its file when matplotlib's font cache predates it."""
    from matplotlib import font_manager

    known = {font.name for font in font_manager.fontManager.ttflist}
    if FALLBACK_FONT_FAMILY not in known:
        for path in font_manager.findSystemFonts(fontext="otf") + font_manager.findSystemFonts():
            if Path(path).name == FALLBACK_FONT_FILE:
                font_manager.fontManager.addfont(path)
                known.add(FALLBACK_FONT_FAMILY)
                break
    if FALLBACK_FONT_FAMILY not in known:
        logger.info("no CJK font (apt-get install fonts-noto-cjk): Chinese, Japanese or Korean class names "
                    "show as boxes in the figures")
        return
    matplotlib.rcParams["font.family"] = ["DejaVu Sans", FALLBACK_FONT_FAMILY]


def _integer_ticks():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    if figure.get_layout_engine() is None:  # a constrained layout places a suptitle; tight_layout does not
        figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=DPI)
    _pyplot().close(figure)
    return buffer.getvalue()


def confusion_png(matrix, labels: list[str], *, normalized: bool = False) -> bytes:
    """A heatmap of the confusion matrix (rows true, columns predicted); `normalized` divides each row by its sum."""
    plt = _pyplot()
    counts = np.asarray(matrix, dtype=np.float64)
    values = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1) if normalized else counts
    size = max(3.5, 0.45 * len(labels) + 2)
    figure, axes = plt.subplots(figsize=(size + 1, size))
    image = axes.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalized else max(1, values.max()))
    colorbar = figure.colorbar(image, ax=axes, fraction=0.046)
    if not normalized:
        colorbar.locator = _integer_ticks()  # counts are whole: no 1.25, 1.75 on a small test set's scale
        colorbar.update_ticks()
    ticks = range(len(labels))
    axes.set_xticks(ticks, labels, rotation=45, ha="right", fontsize=8)
    axes.set_yticks(ticks, labels, fontsize=8)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title("confusion matrix" + (" (each row sums to 1)" if normalized else ""))
    if len(labels) <= 15:
        threshold = values.max() / 2 if values.max() else 1
        for (row, column), value in np.ndenumerate(values):
            text = f"{value:.2f}" if normalized else f"{int(value)}"
            axes.text(column, row, text, ha="center", va="center", fontsize=7,
                      color="white" if value > threshold else "black")
    return _png(figure)


def reliability_png(calibration: dict) -> bytes:
    """The reliability diagram: accuracy per confidence bin against the diagonal, with the ECE."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(4.5, 4))
    bins = [entry for entry in calibration["reliability"] if entry["count"]]
    width = 1.0 / calibration["bins"]
    axes.bar([entry["lower"] for entry in bins], [entry["accuracy"] for entry in bins], width=width,
             align="edge", edgecolor="black", color="#4c78a8", label="accuracy")
    axes.bar([entry["lower"] for entry in bins],
             [entry["confidence"] - entry["accuracy"] for entry in bins],
             bottom=[entry["accuracy"] for entry in bins], width=width, align="edge",
             color="#e45756", alpha=0.35, label="gap to confidence")
    axes.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("confidence")
    axes.set_ylabel("accuracy")
    axes.set_title(f"reliability (ECE {calibration['ece']:.3f})")
    axes.legend(fontsize=7, loc="upper left")
    return _png(figure)


def bar_chart_png(groups: dict[str, dict[str, float]], *, title: str, ylabel: str) -> bytes:
    """Grouped bars: `groups` maps a series name to {category: value} (the same categories in each)."""
    plt = _pyplot()
    categories = list(next(iter(groups.values())).keys()) if groups else []
    figure, axes = plt.subplots(figsize=(min(8, max(5, 0.3 * len(categories) * max(1, len(groups)) + 2)), 4))
    width = 0.8 / max(1, len(groups))
    positions = np.arange(len(categories))
    for offset, (series, values) in enumerate(groups.items()):
        axes.bar(positions + offset * width - 0.4 + width / 2, [values[c] for c in categories], width, label=series)
    # A slanted label ends under its group; an upright one is centred on it (right-aligned, "concat" stood
    # left of its bars in a 3-run comparison chart).
    slanted = len(categories) > 4
    axes.set_xticks(positions, categories, rotation=30 if slanted else 0, ha="right" if slanted else "center",
                    fontsize=8)
    axes.set_ylim(0, 1.05)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(axis="y", alpha=0.3)
    # Beside the axes, not inside: a recall of 1.0 ran under the legend (seen in a multilabel report's chart).
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _png(figure)


def curve_png(
    history: dict, keys: tuple[str, ...], *, ylabel: str, best_epoch: int | None = None,
    name: Callable[[str], str] = str,
) -> bytes:
    """Per-epoch curves of the `history` entries `keys`, each in the legend as `name(key)`, with the best epoch
    (1-based) marked."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(4.6, 3.2))
    for key in keys:
        if key in history:
            axes.plot(range(1, len(history[key]) + 1), history[key], marker="o", markersize=3, label=name(key))
    if best_epoch is not None:
        axes.axvline(best_epoch, color="grey", linestyle=":", label=f"best epoch {best_epoch}")
    axes.set_xlabel("epoch")
    axes.xaxis.set_major_locator(_integer_ticks())  # epochs are whole: no 1.25, 1.5 on a short run's axis
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return _png(figure)


def precision_recall_png(
    curves: dict[str, tuple], average_precision: dict[str, float], operating_points: dict[str, tuple[float, float]],
    support: dict[str, int], *, title: str, operating_point: str,
) -> bytes:
    """One precision-recall curve per label, each named with its average precision, its operating point marked.

    Each curve is drawn as the step function whose area is its average
    precision (`multilabel_metrics.average_precision`): the figure and the
    tables give the same number. Up to `CURVES_PER_AXES` labels share one
    axes; more are small multiples, one label per panel, at most
    `PANELS_AT_MOST` (those with the most rows; the figure says how many
    are left out). A label no row has has no recall and no curve.

    Args:
        curves: `{label: (precision, recall, thresholds)}` (`precision_recall_curve`).
        average_precision: `{label: its average precision}`, as the tables show it.
        operating_points: `{label: (recall, precision)}` of the predictions the tables report.
        support: `{label: rows that have it}`.
        title: the figure's title.
        operating_point: what the marked points are, for the legend.
    """
    plt = _pyplot()
    present = [label for label in curves if support[label]]
    most_rows = set(sorted(present, key=lambda label: -support[label])[:PANELS_AT_MOST])
    shown = [label for label in present if label in most_rows]  # in the tables' order
    left_out = [f"{len(curves) - len(present)} without a row"] if len(present) < len(curves) else []
    if len(shown) < len(present):
        left_out.insert(0, f"{len(present) - len(shown)} with the fewest rows")
    note = f"not drawn: {' and '.join(left_out)}" if left_out else ""
    if len(shown) <= CURVES_PER_AXES:
        figure, axes = plt.subplots(figsize=(7.2, 4.4))
        for index, label in enumerate(shown):
            _draw_precision_recall(axes, curves[label], operating_points[label], f"C{index}",
                                   f"{label} (AP {average_precision[label]:.4f})")
        axes.plot([], [], "o", color="grey", markeredgecolor="black", label=operating_point)
        axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        axes.set_title(title + (f"\n({note})" if note else ""), fontsize=10)
        _precision_recall_axes(axes)
        return _png(figure)
    rows = -(-len(shown) // PANEL_COLUMNS)
    figure, grid = plt.subplots(rows, PANEL_COLUMNS, figsize=(2.4 * PANEL_COLUMNS, 2.2 * rows + 0.6), sharex=True,
                                sharey=True, squeeze=False, layout="constrained")
    for panel, label in zip(grid.flat, shown):
        _draw_precision_recall(panel, curves[label], operating_points[label], "C0", None)
        panel.set_title(f"{label}  AP {average_precision[label]:.4f}", fontsize=8)
        _precision_recall_axes(panel, small=True)
    for panel in grid.flat[len(shown):]:
        panel.set_axis_off()
    figure.suptitle(f"{title} (x recall, y precision; dot: {operating_point})"
                    + (f"\n{note}" if note else ""), fontsize=10)
    return _png(figure)


def _draw_precision_recall(axes, curve: tuple, point: tuple[float, float], colour: str, label: str | None):
    """The step curve from recall 0 (the precision of the highest threshold held over (0, its recall]), and
    the operating point."""
    precision, recall, _ = curve
    axes.plot(np.concatenate([[0.0], recall]), np.concatenate([precision[:1], precision]), drawstyle="steps-pre",
              color=colour, linewidth=1.4, label=label)
    axes.plot(*point, "o", color=colour, markeredgecolor="black", markersize=6, zorder=3)


def _precision_recall_axes(axes, *, small: bool = False):
    axes.set_xlim(0, 1.02)
    axes.set_ylim(0, 1.05)
    axes.grid(alpha=0.3)
    if small:
        axes.tick_params(labelsize=7)
    else:
        axes.set_xlabel("recall")
        axes.set_ylabel("precision")


def heatmap_overlay_png(image: np.ndarray, heatmap: np.ndarray, *, title: str) -> bytes:
    """`heatmap` (any shape, upsampled to the image) drawn translucent over an RGB image (0..255)."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(3.2, 3.2))
    height, width = image.shape[:2]
    axes.imshow(np.asarray(image, dtype=np.uint8), extent=(0, width, height, 0))
    overlay = axes.imshow(heatmap, cmap="jet", alpha=0.45, extent=(0, width, height, 0), interpolation="bilinear")
    # Scaled to the map's own range: a near-uniform attention (0.027-0.028 over 36 patches) looked as peaked as one
    # of 0.9 without it.
    figure.colorbar(overlay, ax=axes, fraction=0.046, pad=0.02).ax.tick_params(labelsize=7)
    axes.set_axis_off()
    axes.set_title(title, fontsize=9)
    return _png(figure)


def _say_missing(axes, what: str):
    """An empty panel says why, in place of blank axes (a photo without text drew a words chart of -0.04..0.04)."""
    axes.set_axis_off()
    axes.text(0.5, 0.5, what, ha="center", va="center", transform=axes.transAxes, color="#777777")


def explanation_png(image, explanation: dict, labels: list[str]) -> bytes:
    """One figure of `explain`'s findings: the image, its occlusion map, the attention map (when there is
    one), the words' importances and the modality contribution."""
    plt = _pyplot()
    panels = 4 + (explanation.get("attention") is not None)
    figure, axes = plt.subplots(1, panels, figsize=(3.3 * panels, 3.4))
    label = labels[explanation["class_index"]]
    axes[0].set_title(f"predicted {label} ({explanation['probability']:.2f})", fontsize=9)
    if image is not None:
        axes[0].imshow(np.asarray(image, dtype=np.uint8))
    else:
        _say_missing(axes[0], "no image")
    maps = [("occlusion: probability drop", explanation["image_heatmap"])]
    if explanation.get("attention") is not None:
        maps.append(("cross-attention of the text", explanation["attention"]["image"]))
    for panel, (title, heatmap) in zip(axes[1:], maps):
        if image is not None and heatmap is not None:
            height, width = np.asarray(image).shape[:2]
            panel.imshow(np.asarray(image, dtype=np.uint8), extent=(0, width, height, 0))
            overlay = panel.imshow(np.asarray(heatmap), cmap="jet", alpha=0.5, extent=(0, width, height, 0),
                                   interpolation="nearest")
            # The colours are scaled to each map's own range: without a scale a drop of 0.05 looked like one of 1.
            figure.colorbar(overlay, ax=panel, fraction=0.046, pad=0.02).ax.tick_params(labelsize=7)
        else:
            _say_missing(panel, "no image")
        panel.set_title(title, fontsize=9)
    for panel in axes[: len(maps) + 1]:
        panel.set_axis_off()
    words = explanation["words"]
    word_axes, modality_axes = axes[-2], axes[-1]
    word_axes.barh([entry["word"] for entry in words][::-1], [entry["importance"] for entry in words][::-1],
                   color="#4c78a8")
    word_axes.set_title("words: probability drop when removed", fontsize=9)
    word_axes.tick_params(labelsize=8)
    if not words:
        _say_missing(word_axes, "no text")
    modality = explanation["modality"]
    # A missing modality's "only" probability is the answer to an empty input: say it is missing instead of a bar.
    missing = {"text_only": None if words else "no text", "image_only": "no image" if image is None else None}
    names = ["fused", "text only", "image only"]
    values = [0.0 if missing.get(key) else modality[key] for key in ("fused", "text_only", "image_only")]
    modality_axes.bar(names, values, color=["#4c78a8", "#f58518", "#54a24b"])
    for position, key in ((1, "text_only"), (2, "image_only")):
        if missing[key]:
            modality_axes.text(position, 0.05, missing[key], ha="center", color="#777777", fontsize=8)
    modality_axes.set_ylim(0, 1)
    modality_axes.set_title(f"probability of {label}", fontsize=9)
    modality_axes.tick_params(labelsize=8)
    return _png(figure)
