"""QAT of a run trained on cached features: the frozen backbones run every step (before) or once (now).

`mmkeras train --freeze both --cache-features` trains the head on the frozen
backbones' cached tokens. `mmkeras qat` of such a run used to run the
backbones on the images at every step; it now calibrates them, caches their
fake-quantized tokens once and trains the head on those
(docs/design.md#qat-of-every-kind-of-run). This script trains the float run
once, then runs QAT both ways on it, each in its own process (its peak RSS is
that process's `ru_maxrss`), `--repeats` times in turn (each new-path run into
an empty cache folder, so its time includes computing the quantized features),
exports each QAT run int8 and evaluates the bundle on `--test`. Prints one JSON
object on stdout (progress on stderr); nothing is asserted.

    python benchmarks/qat_cached_features.py --train samples/train.csv --val samples/val.csv \\
        --test samples/test.csv
    # a pretrained vision backbone folder, e.g. EfficientNet-Lite0 at 224
    python benchmarks/qat_cached_features.py ... --vision-backbone EFFNET_FOLDER --image-size 224
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The two QAT paths: the one a cached run takes now, and the old one (backbones on the images every step).
PATHS = {"cached": True, "images": False}


def child_qat(run_dir: Path, train: Path, out: Path, cached: bool, qat_epochs: int, cache_dir: Path) -> dict:
    """One QAT fine-tune in this process, as `mmkeras qat` runs it, with the feature cache on or off."""
    from mmkeras.quantization.qat_settings import QATSettings
    from mmkeras.quantization.qat_training import QATJob
    from mmkeras.runs import load_run_config

    settings = QATSettings(epochs=qat_epochs)
    config = load_run_config(run_dir).replace(
        data=str(train), out=str(out), epochs=qat_epochs, cache_features=cached, cache_dir=str(cache_dir)
    )
    started = time.perf_counter()
    result = QATJob(run_dir, config, settings).run()
    return {
        "wall_seconds": round(time.perf_counter() - started, 1),
        "epoch_seconds": result.metrics["epoch_seconds"],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "trainable_params": result.metrics["trainable_params"],
        "initial_loss": round(result.metrics["initial_loss"], 4),
        "final_loss": round(result.metrics["final_loss"], 4),
        "val_accuracy": result.metrics["val_accuracy"],
    }


def run_child(args: argparse.Namespace, path: str, out: Path, cache_dir: Path) -> dict:
    command = [sys.executable, __file__, "--child", path, str(out), str(cache_dir),
               "--run", str(args.workdir / "float"), "--train", str(args.train), "--qat-epochs", str(args.qat_epochs)]
    print(f"QAT ({path}) into {out}", file=sys.stderr, flush=True)
    completed = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def int8_figures(qat_dir: Path, bundle_dir: Path, test: Path) -> dict:
    from mmkeras.evaluation.evaluate import evaluate
    from mmkeras.export.converter import export_bundle

    report = export_bundle(qat_dir, bundle_dir, quantize="int8")
    figures = evaluate(bundle_dir, test, save_results=False)
    parity = report["parity"]
    return {"int8_test_accuracy": figures["accuracy"], "int8_agreement_with_qat_keras": parity["label_agreement"],
            "max_abs_logit_diff": round(parity["max_abs_logit_diff"], 4)}


def measure(args: argparse.Namespace) -> dict:
    from mmkeras.config import RunConfig
    from mmkeras.evaluation.evaluate import evaluate
    from mmkeras.training.trainer import train

    workdir = args.workdir
    settings = {"vision_backbone": args.vision_backbone, "image_size": args.image_size}
    config = RunConfig(data=str(args.train), val=str(args.val), out=str(workdir / "float"), epochs=args.epochs,
                       freeze="both", cache_features=True, cache_dir=str(workdir / "float-cache"),
                       **{key: value for key, value in settings.items() if value is not None})
    started = time.perf_counter()
    float_result = train(config)
    float_figures = {"wall_seconds": round(time.perf_counter() - started, 1),
                     "epoch_seconds": float_result.metrics["epoch_seconds"],
                     "trainable_params": float_result.metrics["trainable_params"],
                     "test_accuracy": evaluate(workdir / "float", args.test, save_results=False)["accuracy"]}
    runs = {path: [] for path in PATHS}
    for repeat in range(args.repeats):
        for path in PATHS:
            out = workdir / f"qat-{path}-{repeat}"
            figures = run_child(args, path, out, workdir / f"qat-cache-{repeat}-{path}")
            figures.update(int8_figures(out, workdir / f"int8-{path}-{repeat}", args.test))
            runs[path].append(figures)
    return {"float_run": float_figures, "qat": runs, "ratios_images_over_cached": ratios(runs)}


def ratios(runs: dict) -> dict:
    """Old path over new, per repeat: the whole QAT job's wall time (the new one's includes computing the
    quantized features), its first epoch (which traces the step), its later epochs' mean, and peak RSS."""

    def later_epochs(figures):
        later = figures["epoch_seconds"][1:] or figures["epoch_seconds"]
        return sum(later) / len(later)

    pairs = list(zip(runs["images"], runs["cached"], strict=True))
    return {
        "wall": [round(old["wall_seconds"] / new["wall_seconds"], 2) for old, new in pairs],
        "first_epoch": [round(old["epoch_seconds"][0] / new["epoch_seconds"][0], 2) for old, new in pairs],
        "later_epochs": [round(later_epochs(old) / later_epochs(new), 2) for old, new in pairs],
        "peak_rss": [round(old["peak_rss_mb"] / new["peak_rss_mb"], 2) for old, new in pairs],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--val", type=Path)
    parser.add_argument("--test", type=Path)
    parser.add_argument("--epochs", type=int, default=5, help="float run epochs")
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--vision-backbone")
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--workdir", type=Path, help="keep the runs, caches and bundles here")
    parser.add_argument("--run", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child", nargs=3, metavar=("PATH", "OUT", "CACHE_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        path, out, cache_dir = args.child
        figures = child_qat(args.run, args.train, Path(out), PATHS[path], args.qat_epochs, Path(cache_dir))
        print(json.dumps(figures))
        return
    if args.val is None or args.test is None:
        parser.error("--val and --test are required")
    args.train, args.val, args.test = (path.resolve() for path in (args.train, args.val, args.test))
    with tempfile.TemporaryDirectory(prefix="mmkeras-qat-cache-") as folder:
        args.workdir = (args.workdir or Path(folder)).resolve()
        print(json.dumps(measure(args), indent=2))


if __name__ == "__main__":
    main()
