#!/usr/bin/env bash
# The whole pipeline on the built-in samples, offline: train -> evaluate -> export -> predict.
# Run from the repository root after installing (see README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
rm -rf runs/samples bundles/samples

mmkeras train --config samples/run.yaml --data samples/train.csv --val samples/val.csv --out runs/samples
mmkeras evaluate runs/samples --data samples/test.csv
mmkeras export runs/samples --out bundles/samples --quantize none
mmkeras evaluate bundles/samples --data samples/test.csv
# The first test row, predicted by the TensorFlow-free runtime:
row=$(sed -n 2p samples/test.csv)
text=${row%%,*}
image=$(echo "$row" | cut -d, -f2)
label=${row##*,}
echo "text: \"$text\"  image: samples/$image  true label: $label"
mmkeras predict bundles/samples --text "$text" --image "samples/$image"
