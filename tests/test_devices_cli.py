"""TLKIT_DEVICE is checked, and `tlkit doctor` reports problems as lines instead of tracebacks."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tlkit
from tlkit.devices import default_device

ROOT = Path(__file__).resolve().parents[1]


def test_a_device_name_that_names_no_device_lists_the_valid_ones(monkeypatch):
    monkeypatch.setenv("TLKIT_DEVICE", "gpu")
    with pytest.raises(tlkit.ArgumentError) as err:
        default_device()
    assert "TLKIT_DEVICE='gpu' names no device. Valid values: auto, cpu, cuda, cuda:<index>, mps" in str(err.value)


def test_cuda_on_a_machine_without_a_gpu_warns_and_falls_back(monkeypatch):
    monkeypatch.setenv("TLKIT_DEVICE", "cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(RuntimeWarning, match="TLKIT_DEVICE=cuda is set, but no CUDA GPU is available"):
        device, why = default_device()
    assert device.type in {"cpu", "mps"} and "using" in why and "instead" in why


@pytest.mark.parametrize("value,expected", [("cpu", "cpu"), ("CPU", "cpu"), ("auto", None), ("", None)])
def test_valid_values(monkeypatch, value, expected):
    monkeypatch.setenv("TLKIT_DEVICE", value)
    device, _ = default_device()
    assert expected is None or device.type == expected


def _doctor(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("TLKIT_")}
    full.update({"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **env})
    return subprocess.run([sys.executable, "-m", "tlkit.cli", "doctor", "--no-network"], env=full, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)


def test_doctor_reports_tlkit_data_pointing_at_a_file_and_a_bad_device(tmp_path):
    file = tmp_path / "data.txt"
    file.write_text("not a folder")
    run = _doctor({"TLKIT_DATA": str(file), "TLKIT_DEVICE": "gpu", "TLKIT_CACHE": str(tmp_path / "cache")}, tmp_path)
    assert run.returncode == 0 and "Traceback" not in run.stderr
    out = run.stdout
    assert f"data cache:     PROBLEM: cannot create the data cache ({file} is a file, not a folder)" in out
    assert "point TLKIT_DATA at a writable folder" in out
    assert "device: PROBLEM: ArgumentError: TLKIT_DEVICE='gpu' names no device" in out
    assert "digits               bundled" in out and "network:" in out
    assert file.read_text() == "not a folder"


def test_doctor_with_a_home_where_nothing_can_be_created(tmp_path):
    """A HOME below a file cannot hold a cache folder, even for root (as a read-only HOME cannot)."""
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    home = blocker / "home"
    run = _doctor({"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")}, tmp_path)
    assert run.returncode == 0 and "Traceback" not in run.stderr
    assert "feature cache:  PROBLEM: cannot create the features cache (the user's cache folder)" in run.stdout
    assert "data cache:     PROBLEM: cannot create the data cache" in run.stdout
    assert blocker.read_text() == ""


def test_doctor_reports_the_cuda_fallback(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    run = _doctor({"TLKIT_DEVICE": "cuda", "TLKIT_CACHE": str(tmp_path / "cache")}, tmp_path)
    assert "device: cpu - TLKIT_DEVICE=cuda is set, but no CUDA GPU is available" in run.stdout
