"""Names of the files in a run folder (no TensorFlow needed).

Kept apart from `run_folder` so TF-free readers (reports) can use them.
"""

MODEL_FILE = "model.keras"
LABELS_FILE = "labels.json"
CONFIG_FILE = "config.yaml"
HISTORY_FILE = "history.json"
METRICS_FILE = "metrics.json"
