"""Grading a class: parallel, sandboxed autograding on nbgrader, a tamper scan, a warm shared cache.

* :func:`autograde` grades every submission of a lesson with N workers (or a Dask cluster), each
  submission in a sandbox, and merges the grades into the course gradebook
  (:mod:`tlkit.classroom.autograding`, :mod:`tlkit.classroom.sandbox`);
* :func:`scan_notebook` finds code that tampers with grading (:mod:`tlkit.classroom.scan`);
* :func:`warm_cache` fills the shared data cache before students start, :func:`warm_features` the
  feature cache with what the lessons' graded parts extract (:mod:`tlkit.classroom.warm`).

The command line: ``tlkit autograde LESSON --workers N`` and ``tlkit warm-cache``.
"""
from .autograding import Job, Limits, autograde, find_submissions, grade_submission
from .report import Report, Result
from .scan import Finding, format_findings, scan_notebook, scan_source
from .warm import warm_cache, warm_features

__all__ = ["autograde", "grade_submission", "find_submissions", "Limits", "Job", "Report", "Result",
           "scan_notebook", "scan_source", "format_findings", "Finding", "warm_cache", "warm_features"]
