"""Build hook: the wheel carries the student versions of the lessons (no solutions).

Everything else about the package is in pyproject.toml. When a wheel is built from a checkout
(or an sdist, which includes course/source), the lessons in course/source/ are written, with
solutions and hidden tests removed by tlkit.lessons.student_version, into tlkit/lessons_data/
of the build. `tlkit lessons DIR` copies them out for a learner.
"""
import importlib.util
import sys
import types
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


def _lessons_module():
    """tlkit/lessons.py without importing tlkit (and torch) itself."""
    pkg = types.ModuleType("_tlkit_build")
    pkg.__path__ = [str(HERE / "tlkit")]
    sys.modules["_tlkit_build"] = pkg
    spec = importlib.util.spec_from_file_location("_tlkit_build.lessons", HERE / "tlkit" / "lessons.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class BuildWithLessons(build_py):
    def run(self):
        super().run()
        source = HERE / "course" / "source"
        if source.is_dir() and not self.editable_mode:
            target = Path(self.build_lib) / "tlkit" / "lessons_data"
            written = _lessons_module().build_packaged_lessons(source, target)
            print(f"tlkit: {len(written)} student lessons written to {target}")


setup(cmdclass={"build_py": BuildWithLessons})
