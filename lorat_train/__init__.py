"""LoRAT training: LoRA (or full) fine-tuning on tracking pairs, kept apart from the inference library.

Training pulls in data readers, losses and optimiser code that neither the server nor an inference user
needs, so it lives in its own top-level package and only *imports* `lorat_infer` (model, LoRA, crops,
checkpoints); `lorat_infer` never imports it.
"""

from .config import TrainConfig, load_config
from .trainer import Trainer, train

__all__ = ["TrainConfig", "Trainer", "load_config", "train"]
