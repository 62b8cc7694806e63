"""What one graded submission gave (:class:`Result`), merged into the course (:class:`Report`).

:meth:`Report.merge` is the single writer of the course gradebook: it copies a worker's grades
into it with nbgrader's ``Gradebook`` API (as nbgrader #1424 describes), puts the autograded
notebook in ``autograded/<student>/<lesson>/`` with a first cell telling the student what the
automatic review found (nbgrader's ``generate_feedback`` renders it), and remembers the
submission's fingerprint so the next run can skip it. :meth:`Report.write` writes
``reports/<lesson>/grades.csv`` (one row per submission: status, score per exercise, tamper
findings) and ``report.md`` (the same as a table, then the details).
"""
from __future__ import annotations

import csv
import io
import json
import shutil
import tarfile
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from .scan import Finding, format_findings

__all__ = ["Result", "Report", "STATUSES"]

STATUSES = ("ok", "timeout", "memory", "crashed")
MARKER = ".tlkit-autograde.json"


@dataclass
class Result:
    """One graded submission: status (one of :data:`STATUSES`), where it stopped, the score of each
    graded cell ``{grade_id: (score, max_score, needs_manual_grade)}``, the errors its cells raised,
    the static scan's findings, time and CPU used, and the worker's gradebook and notebooks."""

    student: str
    lesson: str
    status: str
    message: str
    scores: dict[str, tuple[float, float, bool]]
    errors: list[str]
    findings: list[Finding]
    seconds: float
    cpu_seconds: float
    fingerprint: str
    timestamp: str | None = None
    log: str = ""
    gradebook: bytes | None = field(default=None, repr=False)
    autograded: bytes | None = field(default=None, repr=False)

    @property
    def score(self) -> float:
        return sum(s for s, _, _ in self.scores.values())

    @property
    def max_score(self) -> float:
        return sum(m for _, m, _ in self.scores.values())


def _feedback_cell(result: Result) -> dict:
    lines = ["## Automatic review", ""]
    if result.status != "ok":
        lines.append(f"**Grading stopped early ({result.status}):** {result.message}. Exercises after that point "
                     "were not run and score 0; the ones before it are scored.")
        lines.append("")
    lines.append(format_findings(result.findings, audience="student") if result.findings
                 else "The static scan found nothing that changes how your work is checked.")
    return {"cell_type": "markdown", "metadata": {"tlkit": "autograde-review"}, "source": "\n".join(lines)}


@dataclass
class Report:
    """Every result of one ``tlkit autograde`` run, in the order they finished."""

    lesson: str
    root: Path
    results: list[Result] = field(default_factory=list)
    wall_seconds: float = 0.0

    @property
    def folder(self) -> Path:
        return self.root / "reports" / self.lesson

    # -- merging -----------------------------------------------------------------------------
    def merge(self, result: Result, coursedir) -> None:
        """Copy ``result`` into the course: gradebook, ``autograded/``, fingerprint marker."""
        from nbgrader.api import Gradebook
        from nbgrader.utils import parse_utc

        self.results.append(result)
        stamp = parse_utc(result.timestamp).replace(tzinfo=None) if result.timestamp else None
        with Gradebook(coursedir.db_url, coursedir.course_id) as gb, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*not in session.*")  # nbgrader's own, harmless
            gb.update_or_create_student(result.student)
            submission = gb.update_or_create_submission(self.lesson, result.student, timestamp=stamp)
            if result.gradebook:
                self._copy_grades(gb, result)
            else:  # nothing came back: every autograded cell scores 0
                for notebook in submission.notebooks:
                    for grade in notebook.grades:
                        if grade.cell.cell_type == "code":
                            grade.auto_score, grade.needs_manual_grade = 0.0, False
            gb.db.commit()
        dest = Path(coursedir.format_path(coursedir.autograded_directory, result.student, self.lesson))
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        if result.autograded:
            with tarfile.open(fileobj=io.BytesIO(result.autograded), mode="r:gz") as tar:
                tar.extractall(dest, filter="data")
        else:  # keep the submitted notebooks so that feedback can still be generated
            submitted = Path(coursedir.format_path(coursedir.submitted_directory, result.student, self.lesson))
            for nb in submitted.glob("*.ipynb"):
                shutil.copy(nb, dest / nb.name)
        for nb_path in dest.glob("*.ipynb"):
            nb = json.loads(nb_path.read_text(encoding="utf-8"))
            nb["cells"] = [c for c in nb["cells"] if c.get("metadata", {}).get("tlkit") != "autograde-review"]
            nb["cells"].insert(0, _feedback_cell(result))
            nb_path.write_text(json.dumps(nb, indent=1, ensure_ascii=False), encoding="utf-8")
        (dest / MARKER).write_text(json.dumps({"fingerprint": result.fingerprint, "status": result.status}))

    def _copy_grades(self, gb, result: Result) -> None:
        from nbgrader.api import Gradebook

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "worker.db"
            path.write_bytes(result.gradebook)
            with Gradebook(f"sqlite:///{path}") as wgb:
                worker = wgb.find_submission(self.lesson, result.student)
                for notebook in worker.notebooks:
                    for grade in notebook.grades:
                        mine = gb.find_grade(grade.name, notebook.name, self.lesson, result.student)
                        mine.auto_score, mine.needs_manual_grade = grade.auto_score, grade.needs_manual_grade
                    for comment in notebook.comments:
                        mine = gb.find_comment(comment.name, notebook.name, self.lesson, result.student)
                        mine.auto_comment = comment.auto_comment
                    mine_nb = gb.find_submission_notebook(notebook.name, self.lesson, result.student)
                    mine_nb.late_submission_penalty = notebook.late_submission_penalty

    # -- output ------------------------------------------------------------------------------
    def grade_ids(self) -> list[str]:
        ids: list[str] = []
        for r in self.results:
            ids += [g for g in r.scores if g not in ids]
        return ids

    def rows(self) -> list[dict]:
        ids = self.grade_ids()
        rows = []
        for r in sorted(self.results, key=lambda r: r.student):
            row = {"student": r.student, "status": r.status, "score": f"{r.score:g}", "max_score": f"{r.max_score:g}",
                   "where": r.message}
            for g in ids:
                score = r.scores.get(g)
                row[g] = "" if score is None else ("manual" if score[2] else f"{score[0]:g}")
            row["tamper_findings"] = len(r.findings)
            row["findings"] = "; ".join(str(f) for f in r.findings)
            row["errors"] = "; ".join(r.errors)
            row["seconds"] = f"{r.seconds:.1f}"
            row["cpu_seconds"] = f"{r.cpu_seconds:.1f}"
            rows.append(row)
        return rows

    def table(self) -> str:
        """A readable table: one line per submission."""
        ids = self.grade_ids()
        head = ["student", "status", "score", *ids, "tamper", "seconds"]
        body = [[row["student"], row["status"], f"{row['score']}/{row['max_score']}", *[row[g] for g in ids],
                 str(row["tamper_findings"]), row["seconds"]] for row in self.rows()]
        widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        return "\n".join([fmt.format(*head), fmt.format(*["-" * w for w in widths])] + [fmt.format(*b) for b in body])

    def write(self) -> Path:
        """Write ``grades.csv`` and ``report.md`` into :attr:`folder`; return the folder."""
        self.folder.mkdir(parents=True, exist_ok=True)
        rows = self.rows()
        with open(self.folder / "grades.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["student"])
            writer.writeheader()
            writer.writerows(rows)
        lines = [f"# Autograde report: {self.lesson}", "", f"{len(self.results)} submission(s) in "
                 f"{self.wall_seconds:.0f} s.", "", "```", self.table(), "```", ""]
        for r in sorted(self.results, key=lambda r: r.student):
            if r.status == "ok" and not r.findings and not r.errors:
                continue
            lines += [f"## {r.student}: {r.status}", ""]
            if r.message:
                lines += [r.message, ""]
            if r.findings:
                lines += [format_findings(r.findings), ""]
            if r.errors:
                lines += ["Errors raised by its cells:", ""] + [f"- {e}" for e in r.errors] + [""]
        (self.folder / "report.md").write_text("\n".join(lines), encoding="utf-8")
        return self.folder
