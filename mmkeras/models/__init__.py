"""mmkeras.models: backbones, fusion layers and `build_model`."""

from mmkeras.models.concat_fusion import ConcatFusion
from mmkeras.models.cross_attention_fusion import CrossAttentionFusion
from mmkeras.models.gated_fusion import GatedFusion
