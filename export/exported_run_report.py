"""`export_and_report`: export a run to a bundle, then refresh the run's report so it lists the bundle.

`export_bundle` writes the bundle; `mmkeras export` and a Python user who
wants the run's report to list it call this (as `train` refreshes the report
of the run it writes).

Example:
>>> report = export_and_report("runs/demo", "bundles/demo-int8", quantize="int8")  # doctest: +SKIP
>>> report["size_bytes"]  # doctest: +SKIP
412736
"""

from mmkeras.evaluation.report import refresh_report
from mmkeras.export.converter import export_bundle


def export_and_report(run_dir, out_dir, **export_options) -> dict:
    """`export_bundle(run_dir, out_dir, **export_options)`, and the run's report refreshed with the bundle.

    Args:
        run_dir: a run folder (`train`, `qat` or `align`).
        out_dir: the bundle folder to write (or replace).
        **export_options: `quantize`, `calibration_data`, `keep_float` (see `export_bundle`).

    Returns:
        `export_bundle`'s conversion report. A dual-encoder bundle (an align
        run's, reported per encoder under `encoders`) has no place in the
        classifier report, which stays as it was.
    """
    report = export_bundle(run_dir, out_dir, **export_options)
    if "encoders" not in report:
        refresh_report(out_dir)
    return report
