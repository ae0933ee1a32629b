"""Quantization-aware training (QAT) for Keras 3 / keras-hub models, and the `mmkeras qat` fine-tune.

- `quantize_model` (`qat_transform`): a float model to a QAT model.
- `qat_finetune` (`qat_training`): a float run folder to a QAT run folder.
"""
