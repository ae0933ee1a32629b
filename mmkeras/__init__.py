"""mmkeras: text + image models from keras-hub backbones, down to LiteRT bundles.

Importing `mmkeras` is cheap and does not import TensorFlow: the device runtime
(`mmkeras.runtime.predictor`) and the preprocessing it shares with training must
work where only the runtime extra is installed. The training API is loaded on
first use.

Example:
>>> import mmkeras
>>> config = mmkeras.RunConfig(data="samples/train.csv", out="runs/demo", epochs=3)
>>> result = mmkeras.train(config)                          # doctest: +SKIP
>>> mmkeras.export_bundle("runs/demo", "bundles/demo")      # doctest: +SKIP
>>> mmkeras.Predictor("bundles/demo").predict("a red circle", "img.png")  # doctest: +SKIP
"""

from mmkeras.lazy_exports import lazy_getattr

__version__ = "0.1.0"

# public name -> module that defines it (imported lazily)
_PUBLIC = {
    "RunConfig": "mmkeras.config",
    "UserError": "mmkeras.errors",
    "build_model": "mmkeras.models.builder",
    "train": "mmkeras.training.trainer",
    "quantize_model": "mmkeras.quantization.qat_transform",
    "qat_finetune": "mmkeras.quantization.qat_training",
    "QATSettings": "mmkeras.quantization.qat_settings",
    "JobResult": "mmkeras.training.job",
    "evaluate": "mmkeras.evaluation.evaluate",
    "export_bundle": "mmkeras.export.converter",
    "export_and_report": "mmkeras.export.exported_run_report",
    "Predictor": "mmkeras.runtime",
    "predict_file": "mmkeras.runtime.batch_predict",
    "predict_folder": "mmkeras.runtime.batch_predict",
    # Alignment, matching and retrieval.
    "align": "mmkeras.training.align_job",
    "build_dual_encoder": "mmkeras.models.dual_encoder",
    "zero_shot_evaluate": "mmkeras.evaluation.zero_shot",
    "Embedder": "mmkeras.runtime.embedder",
    "ImageIndex": "mmkeras.runtime.image_index",
    "build_index": "mmkeras.runtime.image_index",
}

__all__ = sorted(_PUBLIC)

__getattr__ = lazy_getattr("mmkeras", _PUBLIC)
