"""mmkeras.export: from a run folder to a LiteRT bundle (needs TensorFlow).

- `litert_conversion`: `convert_model` (Keras model -> .tflite bytes in
  float32, float16, dynamic-range or int8).
- `converter`: `export_bundle` (run folder -> bundle folder, written aside and
  renamed into place by `mmkeras.staged_folder`); `dual_encoder_export` for
  an align run.
- `conversion_report`: op precision, float islands, size and parity of an
  export, stored in bundle.json and printed by `mmkeras export`.
- `bundle_writer`: writing `bundle.json`.

The device side (reading bundles, the interpreter, `Predictor`, the
benchmark) is `mmkeras.runtime`, which needs no TensorFlow.

Example:
>>> from mmkeras.export.converter import export_bundle       # doctest: +SKIP
>>> export_bundle("runs/demo", "bundles/demo", quantize="dynamic")  # doctest: +SKIP
"""
