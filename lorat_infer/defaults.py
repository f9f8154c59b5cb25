"""The model a user gets without naming one: the packaged default, or a loud random stand-in.

One function so that `lorat-track`, the demo and the server fall back the same way while the packaged
model file is absent (e.g. a checkout where it has not been trained yet).
"""

from __future__ import annotations

import logging
import warnings

from .loading import default_model_path, load_model
from .model import LoRAT, build_model

log = logging.getLogger(__name__)

FALLBACK_VARIANT = "tiny"


class RandomWeightsWarning(UserWarning):
    """The tracker runs with random weights: its boxes are meaningless."""


def default_tracker_model(allow_random: bool = True) -> LoRAT:
    """`load_model()` (the packaged default model); if its file is missing and `allow_random`, a randomly
    initialised "tiny" model with a warning (logged and raised as `RandomWeightsWarning`)."""
    path = default_model_path()
    if path.is_file():
        return load_model()
    if not allow_random:
        raise FileNotFoundError(f"the packaged default model is missing: {path}")
    message = (
        f"the packaged default model {path} is missing: using a RANDOMLY INITIALISED "
        f"{FALLBACK_VARIANT!r} model, whose boxes are meaningless; pass a checkpoint instead"
    )
    log.warning(message)
    warnings.warn(message, RandomWeightsWarning, stacklevel=2)
    return build_model(FALLBACK_VARIANT).eval()
