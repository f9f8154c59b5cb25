"""Suite-wide settings: no hub downloads, quiet OpenMP waits, deterministic small thread pools."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Servers the tests start keep the web console off unless a test asks for it (--http-port wins over this):
# several servers at once must not race for the default port 8080.
os.environ.setdefault("LORAT_HTTP_PORT", "-1")
