"""``segxai`` main: running out of memory is one sentence and a non-zero exit; programming errors keep their traceback."""

from __future__ import annotations

import pytest
import torch

import napari_segxai.cli.segment as segment_command
from napari_segxai.cli import main


def run_raising(monkeypatch, tmp_path, error: BaseException) -> int:
    def run(args):
        raise error

    monkeypatch.setattr(segment_command, "run", run)
    return main(["segment", str(tmp_path), "--out", str(tmp_path / "out")])


def test_gpu_out_of_memory_is_one_sentence_with_what_to_try(monkeypatch, tmp_path, capsys):
    error = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB (GPU 0; 8.00 GiB total capacity)")
    assert run_raising(monkeypatch, tmp_path, error) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert err.startswith("segxai segment: error: the GPU ran out of memory")
    assert "roi_size" in err and "sw_batch_size" in err and "--device cpu" in err


def test_memory_error_is_one_sentence_with_what_to_try(monkeypatch, tmp_path, capsys):
    assert run_raising(monkeypatch, tmp_path, MemoryError()) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("segxai segment: error: the computer ran out of memory")
    assert "roi_size" in err and "sw_batch_size" in err


@pytest.mark.parametrize("error", [ZeroDivisionError("a bug"), RuntimeError("Expected all tensors to be on the same device")])
def test_a_programming_error_keeps_its_traceback(monkeypatch, tmp_path, error):
    with pytest.raises(type(error), match=str(error)):
        run_raising(monkeypatch, tmp_path, error)
