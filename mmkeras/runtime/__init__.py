"""mmkeras.runtime: what runs on the device, without TensorFlow.

Needs only the base install (numpy, pillow, tokenizers, ai-edge-litert):

- `bundle`: the bundle folder's files and reading `bundle.json`.
- `interpreter`: loading and calling .tflite models by input name, listing ops.
- `predictor`: `Predictor`, the same preprocessing as training, then the model.
- `benchmark`: latency and size of a bundle on this machine.

Example:
>>> from mmkeras.runtime import Predictor                      # doctest: +SKIP
>>> Predictor("bundles/demo").predict("a red circle", "circle.png").label  # doctest: +SKIP
'red_calm'
"""

from mmkeras.runtime.predictor import Prediction, Predictor

__all__ = ["Prediction", "Predictor"]
