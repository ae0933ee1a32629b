"""TF-free preprocessing shared by training and the device runtime.

Only numpy, Pillow and Hugging Face `tokenizers` are imported here, never
TensorFlow or Keras: the device runtime imports this package.

Example:
>>> from mmkeras.preprocessing import MultimodalPreprocessor  # doctest: +SKIP
>>> preprocessor = MultimodalPreprocessor.load("runs/demo")    # doctest: +SKIP
>>> inputs = preprocessor(["a red circle"], ["circle.png"])     # doctest: +SKIP
"""

from mmkeras.preprocessing.image import UnreadableImageError, load_image
from mmkeras.preprocessing.multimodal_preprocessor import MultimodalPreprocessor
from mmkeras.preprocessing.text import TextTokenizer

__all__ = ["MultimodalPreprocessor", "TextTokenizer", "UnreadableImageError", "load_image"]
