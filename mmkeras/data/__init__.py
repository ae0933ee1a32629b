"""Manifests and the tf.data input pipeline.

`read_manifest`, `Manifest` and `ManifestRow` are TensorFlow-free;
`make_dataset` imports TensorFlow, so every name is loaded on first use.

Example:
>>> from mmkeras.data import make_dataset, read_manifest       # doctest: +SKIP
>>> manifest = read_manifest("samples/train.csv")               # doctest: +SKIP
"""

from mmkeras.lazy_exports import lazy_getattr

# public name -> module that defines it (imported lazily)
_PUBLIC = {
    "Manifest": "mmkeras.data.manifest",
    "ManifestRow": "mmkeras.data.manifest",
    "read_manifest": "mmkeras.data.manifest",
    "make_dataset": "mmkeras.data.dataset",
}

__all__ = sorted(_PUBLIC)

__getattr__ = lazy_getattr("mmkeras.data", _PUBLIC)
