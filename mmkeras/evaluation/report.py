"""`write_report`: a self-contained HTML page for a run (curves, final figures, config).

Reads only the run folder's JSON/YAML files (no TensorFlow); the loss and
accuracy curves are drawn with matplotlib and embedded as PNG data URIs, so
the single file can be mailed or attached to a ticket.
"""

import base64
import html
import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on training servers
import matplotlib.pyplot as plt  # noqa: E402

from mmkeras.errors import UserError  # noqa: E402
from mmkeras.runs import CONFIG_FILE, HISTORY_FILE, METRICS_FILE  # noqa: E402


def plot_curves(history: dict, metric: str) -> str:
    """A PNG data URI of `metric` and `val_<metric>` per epoch."""
    figure, axes = plt.subplots(figsize=(5, 3.2), dpi=100)
    for key in (metric, f"val_{metric}"):
        if key in history:
            epochs = range(1, len(history[key]) + 1)
            axes.plot(epochs, history[key], marker="o", label=key)
    axes.set_xlabel("epoch")
    axes.set_ylabel(metric)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def table(values: dict) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(str(key))}</th><td>{html.escape(json.dumps(value))}</td></tr>"
        for key, value in values.items()
    )
    return f"<table>{rows}</table>"


def write_report(run_dir, out=None) -> Path:
    """Write `report.html` for a run folder.

    Args:
        run_dir: a run folder written by `train`.
        out: the HTML file to write (default: `RUN_DIR/report.html`).

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
    metrics_path = run_dir / METRICS_FILE
    metrics = json.loads(metrics_path.read_text(encoding="utf-8")) if metrics_path.is_file() else {}
    config_path = run_dir / CONFIG_FILE
    config = config_path.read_text(encoding="utf-8") if config_path.is_file() else ""
    curves = "".join(
        f'<img alt="{metric} per epoch" src="{plot_curves(history, metric)}">'
        for metric in ("loss", "accuracy")
        if metric in history
    )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>mmkeras run {html.escape(run_dir.name)}</title>
<style>body{{font-family:sans-serif;margin:2em}}th{{text-align:left;padding-right:1em}}img{{margin:0 1em 1em 0}}</style>
</head><body>
<h1>Run {html.escape(run_dir.name)}</h1>
<h2>Curves</h2>{curves}
<h2>Final figures</h2>{table(metrics)}
<h2>Config</h2><pre>{html.escape(config)}</pre>
</body></html>
"""
    out = Path(out) if out else run_dir / "report.html"
    out.write_text(page, encoding="utf-8")
    return out
