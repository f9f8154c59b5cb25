"""Suite-wide settings: no hub downloads, quiet OpenMP waits, deterministic small thread pools."""

import os
import re

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Servers the tests start keep the web console off unless a test asks for it (--http-port wins over this):
# several servers at once must not race for the default port 8080.
os.environ.setdefault("LORAT_HTTP_PORT", "-1")


# The only skips `make test` accepts: tests for hardware this machine kind does not have (a CUDA GPU).
ALLOWED_SKIPS = re.compile(os.environ.get("LORAT_ALLOWED_SKIPS", r"needs a CUDA GPU|CUDA"))


def pytest_sessionfinish(session, exitstatus):  # type: ignore[no-untyped-def]
    """Under `make test` (LORAT_NO_SKIPS=1) a skipped test fails the run: the suite must run whole (only
    tests for absent hardware, ALLOWED_SKIPS, may skip)."""
    if os.environ.get("LORAT_NO_SKIPS") != "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = [r for r in (reporter.stats.get("skipped", []) if reporter is not None else [])
               if not ALLOWED_SKIPS.search(str(r.longrepr))]
    if skipped and session.exitstatus == 0:
        session.exitstatus = 1
        reporter.write_line(f"FAILED: {len(skipped)} test(s) skipped (reasons above); make test runs the whole "
                            "suite: install what they need with .ci/system-deps", red=True, bold=True)
