"""The process's resident memory, and giving the freed heap back only when it outgrows a ceiling."""

import numpy as np

from napari_segxai.core import memory


def test_resident_bytes_sees_an_allocation_touched():
    before = memory.resident_bytes()
    block = np.ones(200 * 2**20, dtype=np.uint8)   # 200 MiB, every page written
    grown = memory.resident_bytes() - before
    assert 150 * 2**20 < grown < 400 * 2**20, grown
    del block


def test_the_heap_is_given_back_only_over_the_ceiling(monkeypatch):
    resident, trims = [1000], []
    monkeypatch.setattr(memory, "resident_bytes", lambda: resident[0])
    monkeypatch.setattr(memory, "return_freed_memory", lambda: trims.append(resident[0]))
    heap = memory.HeapCeiling(allowance=500)          # ceiling 1500
    for held in (1200, 1500, 1700, 1400, 2000):
        resident[0] = held
        heap.check()
    assert trims == [1700, 2000]


def test_without_an_allowance_the_first_check_sets_the_ceiling(monkeypatch):
    resident, trims = [1000], []
    monkeypatch.setattr(memory, "resident_bytes", lambda: resident[0])
    monkeypatch.setattr(memory, "return_freed_memory", lambda: trims.append(resident[0]))
    heap = memory.HeapCeiling()
    for held in (3000, 3000, 2900, 3100):   # the first batch leaves 3000 with the allocator
        resident[0] = held
        heap.check()
    assert trims == [3100]
