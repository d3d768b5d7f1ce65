"""The malloc tuning applied on import, and the switch that turns it off."""

import platform

import pytest

from chainrule import _allocator


def test_the_tuning_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("CHAINRULE_MALLOC_TUNING", "0")
    assert _allocator.keep_freed_memory_in_the_heap() is False


def test_glibc_own_variables_take_precedence(monkeypatch):
    monkeypatch.delenv("CHAINRULE_MALLOC_TUNING", raising=False)
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert _allocator.keep_freed_memory_in_the_heap() is False


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="mallopt is glibc's")
def test_glibc_accepts_the_thresholds(monkeypatch):
    for name in ("CHAINRULE_MALLOC_TUNING", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        monkeypatch.delenv(name, raising=False)
    assert _allocator.keep_freed_memory_in_the_heap() is True
