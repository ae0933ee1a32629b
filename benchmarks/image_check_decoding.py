"""The image check before training (`Manifest.validate_images`), decoding every pixel vs as training decodes.

Prints one JSON object on stdout. Measures, asserts nothing.

Checks the images of `MANIFEST` with an empty image check cache (a fresh `MMKERAS_CACHE_DIR` for each check, the
user's cache untouched), each check in a fresh process, the two decodings interleaved `--rounds` times:

- `whole`: every pixel decoded (`jpeg_draft_factor=None`, the check before this change);
- `reduced`: JPEGs decoded at the smallest DCT scale keeping `JPEG_DRAFT_FACTOR` times the size, as a new
  run's `MultimodalPreprocessor` decodes them in training and on the device.

Per check: `seconds` (the `validate_images` call), `rows_dropped` (bad rows, under `skip`) and `peak_rss_mb`
(the process's, after it).

    python benchmarks/image_check_decoding.py MANIFEST [--image-size 224] [--rounds 3]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

DECODINGS = ("whole", "reduced")


def check_once(manifest: str, image_size: int, decoding: str) -> dict:
    """One check in this process (its cache folder set by the caller)."""
    from mmkeras.data.manifest import read_manifest
    from mmkeras.preprocessing.image import JPEG_DRAFT_FACTOR

    rows = read_manifest(manifest)
    factor = JPEG_DRAFT_FACTOR if decoding == "reduced" else None
    start = time.perf_counter()
    _, dropped = rows.validate_images((image_size, image_size), "skip", jpeg_draft_factor=factor)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"decoding": decoding, "seconds": round(seconds, 3), "rows_dropped": dropped,
            "peak_rss_mb": round(peak_mb, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", choices=DECODINGS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(check_once(args.manifest, args.image_size, args.child)))
        return
    checks = []
    for round_number in range(args.rounds):
        for decoding in DECODINGS:
            with tempfile.TemporaryDirectory() as cache:
                environment = {**os.environ, "MMKERAS_CACHE_DIR": os.path.join(cache, "features")}
                done = subprocess.run(
                    [sys.executable, __file__, args.manifest, "--image-size", str(args.image_size), "--child",
                     decoding], env=environment, capture_output=True, text=True, check=True,
                )
            checks.append({"round": round_number + 1, **json.loads(done.stdout.strip().splitlines()[-1])})
            print(checks[-1], file=sys.stderr)
    medians = {}
    for decoding in DECODINGS:
        seconds = sorted(check["seconds"] for check in checks if check["decoding"] == decoding)
        medians[decoding] = seconds[len(seconds) // 2]
    print(json.dumps({"manifest": args.manifest, "image_size": args.image_size, "checks": checks,
                      "median_seconds": medians,
                      "reduced_over_whole": round(medians["reduced"] / medians["whole"], 3)}, indent=2))


if __name__ == "__main__":
    main()
