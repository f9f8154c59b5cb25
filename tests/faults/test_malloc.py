"""lorat-serve caps glibc's malloc arenas for itself (server/malloc.py); an operator's MALLOC_ARENA_MAX
wins. (glibc: the project runs on Debian.)"""

from __future__ import annotations

import pytest

from server.malloc import cap_arenas


def test_caps_arenas_unless_the_environment_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert cap_arenas() is True
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert cap_arenas() is False
