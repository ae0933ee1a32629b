"""The layers of mmkeras, bottom first: a module imports only from its own layer and the layers below it.

This table is the one statement of the order: `tests/test_layers.py` checks
every import of every module (module-level and inside functions) against it
and refuses import cycles, and docs/architecture.md's table is checked
against it. A module belongs to the layer of the longest name in `LAYERS`
that it is, or sits under.

The pipeline reads data -> preprocessing -> models -> training ->
quantization -> export -> runtime -> web, but the imports cannot follow it
end to end: the runtime (and the web site built on it) must run without
TensorFlow, so everything the device shares with training (preprocessing,
the manifest, the run and bundle folder formats) sits low, and the runtime
sits below the Keras side that writes what it reads.

Example:
>>> layer_of("mmkeras.runtime.predictor")
'runtime'
>>> layer_of("mmkeras.quantization.qat_training")
'qat'
"""

ROOT_PACKAGE = "mmkeras"  # listed on its own: it holds only the lazy public names, not every module under it
# (layer, what it holds, the modules or packages in it), bottom first.
LAYERS = (
    ("utilities", "errors, atomic writes, folder locks, progress, log silencing, private-API wrappers", (
        ROOT_PACKAGE, "mmkeras.lazy_exports", "mmkeras.errors", "mmkeras.atomic_files", "mmkeras.staged_folder",
        "mmkeras.folder_lock", "mmkeras.framework_logs", "mmkeras.progress", "mmkeras.peak_memory", "mmkeras.compat",
        "mmkeras.layers",
    )),
    ("preprocessing", "text and image preprocessing, shared bit for bit by training and the device", (
        "mmkeras.preprocessing",
    )),
    ("settings", "RunConfig and the run folder's format (TensorFlow-free)", ("mmkeras.config", "mmkeras.runs")),
    ("data", "manifests and tf.data pipelines", ("mmkeras.data",)),
    ("runtime", "reading bundles and running them without TensorFlow", ("mmkeras.runtime",)),
    ("web", "the static site that runs a bundle in the browser", ("mmkeras.web",)),
    ("models", "backbones, fusion layers, heads, the dual encoder", ("mmkeras.models",)),
    ("quantization", "the QAT transform and quantized layers; loading a run (a QAT run is rebuilt)", (
        "mmkeras.quantization",
    )),
    ("tasks", "one object per task: its labels, head, loss, metrics, thresholds and evaluation", ("mmkeras.tasks",)),
    ("evaluation", "figures of runs and bundles, the results folder and the report", ("mmkeras.evaluation",)),
    ("training", "train, align and cross-validation jobs", ("mmkeras.training",)),
    ("qat", "the QAT fine-tune, a training job on a quantized model", ("mmkeras.quantization.qat_training",)),
    ("export", "run folder to bundle folder (LiteRT conversion)", ("mmkeras.export",)),
    ("cli", "the `mmkeras` command: parses options and prints", ("mmkeras.cli",)),
)
LAYER_NAMES = tuple(name for name, _, _ in LAYERS)


def layer_of(module: str) -> str:
    """The layer a module (dotted name, as installed) belongs to: its longest listed prefix's."""
    best, best_length = None, -1
    for name, _, members in LAYERS:
        for member in members:
            inside = member != ROOT_PACKAGE and module.startswith(member + ".")
            if (module == member or inside) and len(member) > best_length:
                best, best_length = name, len(member)
    if best is None:
        raise KeyError(f"{module} is in no layer of mmkeras.layers.LAYERS")
    return best


def may_import(importer: str, imported: str) -> bool:
    """Whether module `importer` may import module `imported`: same layer or a lower one."""
    return LAYER_NAMES.index(layer_of(imported)) <= LAYER_NAMES.index(layer_of(importer))
