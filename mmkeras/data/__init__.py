"""Manifests and the tf.data input pipeline.

`read_manifest`, `Manifest` and `ManifestRow` are TensorFlow-free;
`make_dataset` imports TensorFlow, so every name is loaded on first use.

Example:
>>> from mmkeras.data import make_dataset, read_manifest       # doctest: +SKIP
>>> manifest = read_manifest("samples/train.csv")               # doctest: +SKIP
"""

import importlib

# public name -> module that defines it (imported lazily)
_PUBLIC = {
    "Manifest": "mmkeras.data.manifest",
    "ManifestRow": "mmkeras.data.manifest",
    "read_manifest": "mmkeras.data.manifest",
    "make_dataset": "mmkeras.data.dataset",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'mmkeras.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)
