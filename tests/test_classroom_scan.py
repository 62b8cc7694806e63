"""The static tamper scan finds the attacks of issue 15 and leaves ordinary solutions alone."""
from __future__ import annotations

import pytest

from tlkit.classroom.scan import format_findings, scan_notebook, scan_source

ATTACKS = {
    "import tlkit\ntlkit.grading._fail = lambda m: None": "assigns into a module",
    "from tlkit import grading\ngrading._fail = lambda m: None": "assigns into a module",
    "import tlkit\ntlkit.grading.check_frozen = lambda *a, **k: None": "assigns into a module",
    "import tlkit as tk\ntk.trainable_summary = print": "assigns into a module",
    "import torch\ntorch.nn.Module.train = lambda self, mode=True: self": "assigns into a module",
    "import inspect\nexpected = inspect.stack()[1].frame.f_locals['expected']": "frame inspection",
    "import sys\nframe = sys._getframe(1)": "frame inspection",
    "import sys\nsys.modules['tlkit.grading'].check_head = None": "sys.modules",
    "import importlib, tlkit\nimportlib.reload(tlkit)": "importlib.reload",
    "import tlkit\nsetattr(tlkit.grading, '_fail', None)": "setattr on a module",
    "import builtins\nbuiltins.isinstance = lambda *a: True": "builtins",
    "isinstance = lambda *a: True": "builtins",
    "exec('tlkit.grading._fail = None')": "dynamic code",
}


@pytest.mark.parametrize("source,kind", ATTACKS.items(), ids=[k.split("\n")[-1][:40] for k in ATTACKS])
def test_each_attack_is_found(source, kind):
    kinds = [f.kind for f in scan_source(source)]
    assert kind in kinds, kinds


def test_ordinary_solutions_are_not_flagged():
    solution = """
import torch
from torch import nn
import tlkit
model = tlkit.load_backbone("efficientnet_lite0")
model.classifier = nn.Linear(tlkit.num_features(model), 2)
for p in model.parameters():
    p.requires_grad = False
model.classifier.requires_grad_(True)
bn = model.bn1
bn.momentum = 0.1
%matplotlib inline
!ls
optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
"""
    assert scan_source(solution) == []


def test_notebook_scan_skips_locked_cells_and_says_where():
    nb = {"cells": [
        {"cell_type": "code", "metadata": {"nbgrader": {"locked": True, "grade_id": "setup"}},
         "source": "import inspect\nimport tlkit\nfrom tlkit import grading"},
        {"cell_type": "markdown", "metadata": {}, "source": "grading._fail = None"},
        {"cell_type": "code", "metadata": {"nbgrader": {"solution": True, "grade_id": "ex1"}},
         "source": ["x = 1\n", "grading._fail = lambda m: None\n"]},
        {"cell_type": "code", "metadata": {"nbgrader": {"grade": True, "locked": True, "grade_id": "ex1_test"}},
         "source": "inspect.stack()"},
    ]}
    findings = scan_notebook(nb)
    assert [str(f) for f in findings] == ["cell 3 (ex1), line 2: assigns into a module: grading._fail = lambda m: None"]
    student = format_findings(findings, audience="student")
    assert "changes how your work is checked" in student and "`grading._fail = lambda m: None`" in student
