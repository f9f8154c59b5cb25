"""LoRAT tracker library: models, checkpoints, crops, the batched engine and evaluation.

No gRPC and no Redis here: a researcher evaluating a checkpoint on a video needs neither.
"""

import warnings

# timm imports torchvision, whose optional image extension is absent on CPU-only installs; we never use it.
warnings.filterwarnings("ignore", message="Failed to load image Python extension")

from .checkpoint import CheckpointError, load_official, save_merged
from .config import VARIANTS, LoRATConfig, get_config
from .engine import InvalidInput, TrackingEngine, TrackResult, TrackState
from .loading import load_model
from .lora import apply_lora, merge_lora
from .mixformer import MixFormerV2, MixFormerV2Config
from .model import LoRAT, build_model
from .tracker import Tracker

__all__ = [
    "VARIANTS",
    "CheckpointError",
    "InvalidInput",
    "LoRAT",
    "LoRATConfig",
    "MixFormerV2",
    "MixFormerV2Config",
    "TrackResult",
    "TrackState",
    "Tracker",
    "TrackingEngine",
    "apply_lora",
    "build_model",
    "get_config",
    "load_model",
    "load_official",
    "merge_lora",
    "save_merged",
]
