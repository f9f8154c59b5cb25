"""MixFormerV2 (NeurIPS 2023, MCG-NJU/MixFormerV2) as the library's second tracker family.

A sub-package because the family brings its own network, checkpoint format, crop (the authors' OpenCV
`sample_target`) and online-template rule; nothing here is shared with LoRAT's modules except the strict
state-dict loader, and the engine reaches it only through the family interface.
"""

from .config import VARIANTS, MixFormerV2Config, TrackerParams, default_params, get_config
from .model import MixFormerV2, TemplateCache, build_model

__all__ = [
    "VARIANTS",
    "MixFormerV2",
    "MixFormerV2Config",
    "TemplateCache",
    "TrackerParams",
    "build_model",
    "default_params",
    "get_config",
]
