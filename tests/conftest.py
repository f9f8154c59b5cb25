"""Suite-wide settings: no hub downloads, quiet OpenMP waits, deterministic small thread pools."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
