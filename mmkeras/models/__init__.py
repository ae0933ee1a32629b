"""mmkeras.models: backbones, fusion layers and `build_model`.

Importing this package registers the mmkeras layers with Keras, which loading
a saved `.keras` model needs.
"""

from mmkeras.models.builder import build_model
from mmkeras.models.concat_fusion import ConcatFusion
from mmkeras.models.cross_attention_fusion import CrossAttentionFusion
from mmkeras.models.dual_encoder import build_dual_encoder
from mmkeras.models.gated_fusion import GatedFusion
from mmkeras.models.logit_scale import LogitScale
from mmkeras.models.modality_dropout import ModalityDropout
from mmkeras.models.text_backbones import BUILTIN_TEXT_BACKBONES, TextBackbone, load_text_backbone, text_sequence
from mmkeras.models.vision_backbones import (
    BUILTIN_VISION_BACKBONES,
    VisionBackbone,
    load_vision_backbone,
    vision_tokens,
)

__all__ = [
    "BUILTIN_TEXT_BACKBONES",
    "BUILTIN_VISION_BACKBONES",
    "ConcatFusion",
    "CrossAttentionFusion",
    "GatedFusion",
    "LogitScale",
    "ModalityDropout",
    "TextBackbone",
    "VisionBackbone",
    "build_dual_encoder",
    "build_model",
    "load_text_backbone",
    "load_vision_backbone",
    "text_sequence",
    "vision_tokens",
]
