"""mmkeras.export: LiteRT conversion, the bundle format and the on-device runtime.

- `converter` (needs TensorFlow): `convert_model` (Keras model -> .tflite bytes
  in float32, float16, dynamic-range or int8) and `export_bundle` (run folder
  -> bundle folder).
- `bundle` (TensorFlow-free): the bundle folder and its `bundle.json`.
- `interpreter` (TensorFlow-free): loading and calling .tflite models by input
  name, and listing their ops.
- `runtime` (TensorFlow-free): `Predictor`, what runs on the device.

This package's `__init__` imports nothing, so the device runtime can import it
where TensorFlow is not installed.

Example:
>>> from mmkeras.export.converter import export_bundle       # doctest: +SKIP
>>> export_bundle("runs/demo", "bundles/demo", quantize="dynamic")  # doctest: +SKIP
>>> from mmkeras.export.runtime import Predictor              # doctest: +SKIP
>>> Predictor("bundles/demo").predict("a red circle", "circle.png").label  # doctest: +SKIP
'red_calm'
"""
