"""bench/course_times.py: the seed override and the claim collection it relies on."""
import importlib.util
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("course_times", ROOT / "bench" / "course_times.py")
course_times = importlib.util.module_from_spec(spec)
spec.loader.exec_module(course_times)


def _nb(*sources):
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])


def test_set_seed_changes_only_the_lessons_seed_line():
    nb = _nb("import tlkit", "SEED = 0            # comment stays\nSEEDS = [SEED]\nsubset(seed=0)")
    assert course_times.set_seed(nb, 2)
    assert nb.cells[1].source == "SEED = 2            # comment stays\nSEEDS = [SEED]\nsubset(seed=0)"
    assert not course_times.set_seed(_nb("x = 1"), 2)


def test_every_lesson_has_a_seed_line():
    for path in sorted((ROOT / "course" / "source").glob("*/*.ipynb")):
        assert course_times.set_seed(nbformat.read(path, as_version=4), 1), f"{path.name} has no 'SEED = ...' line"


def test_claims_and_errors_are_read_from_the_outputs():
    nb = _nb("a", "b", "c")
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", name="stdout",
                                                  text="x\n✓ shown on this run: probe beats scratch (90% vs 50%)\n")]
    nb.cells[1].outputs = [nbformat.v4.new_output("error", ename="ClaimNotShown", traceback=[],
                                                  evalue="not shown on this run: b wins (1 vs 2).\nThe lesson's text says")]
    nb.cells[2].outputs = [nbformat.v4.new_output("error", ename="NameError", evalue="name 'x' is not defined", traceback=[])]
    claims, errors = course_times.claims_and_errors(nb)
    assert claims == ["shown on this run: probe beats scratch (90% vs 50%)", "✗ not shown on this run: b wins (1 vs 2)"]
    assert errors == ["NameError: name 'x' is not defined"]


def test_gpu_settings_switch_is_found_in_every_lesson():
    nb = _nb('device, why = tlkit.default_device()\nGPU = device.type == "cuda"')
    assert course_times.force_gpu_settings(nb) and nb.cells[0].source.endswith("GPU = True  # course_times.py --gpu-settings")
    for path in sorted((ROOT / "course" / "source").glob("*/*.ipynb")):
        assert course_times.force_gpu_settings(nbformat.read(path, as_version=4)), f"{path.name} has no GPU switch"


def test_claims_are_read_from_what_check_claim_really_prints(capsys):
    import pytest
    from tlkit import grading

    grading.check_claim(True, "a wins", "3 vs 1")
    nb = _nb("a", "b")
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text=capsys.readouterr().out)]
    with pytest.raises(grading.ClaimNotShown) as info:
        grading.check_claim(False, "b wins", "1 vs 2")
    nb.cells[1].outputs = [nbformat.v4.new_output("error", ename="ClaimNotShown", evalue=str(info.value), traceback=[])]
    assert course_times.claims_and_errors(nb) == (["shown on this run: a wins (3 vs 1)",
                                                    "✗ not shown on this run: b wins (1 vs 2)"], [])


def test_claims_table_has_a_row_per_claim_and_a_column_per_seed():
    log = ("02-feature-extraction seed 0     12.0 s  ok\n"
           "    shown on this run: probe beats scratch (90% vs 50% (chance 50%))\n"
           "    shown on this run: flowers work (80%)\n"
           "02-feature-extraction seed 1     11.0 s  FAILED: ✗ ...\n"
           "    ✗ not shown on this run: probe beats scratch (55% vs 60%)\n")
    runs = course_times.runs_from_log(log)
    assert [(lesson, seed, len(claims)) for lesson, seed, claims in runs] == [
        ("02-feature-extraction", 0, 2), ("02-feature-extraction", 1, 1)]
    table = course_times.claims_table(runs, [0, 1, 2]).splitlines()
    assert table[0] == "| lesson | claim | seed 0 | seed 1 | seed 2 |"
    assert table[2] == "| 2 | probe beats scratch | 90% vs 50% (chance 50%) | ✗ 55% vs 60% | not run |"
    assert table[3] == "| 2 | flowers work | 80% | not run | not run |"
    assert course_times.split_claim("shown on this run: no evidence") == ("no evidence", "", True)


def test_advisor_table_counts_agreement_and_shows_the_best_test_accuracy():
    spec = importlib.util.spec_from_file_location("advisor_agreement", ROOT / "bench" / "advisor_agreement.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    row = {"dataset": "digits", "size": "small", "per_class": 20, "band": "small", "similarity": 0.0,
           "recommended": "early_features", "winner": "fine_tune_all", "agrees": False,
           "test": {"early_features": 0.9, "fine_tune_all": 0.8, "retrain_all": 0.95}}
    table = bench.markdown_table([row, dict(row, agrees=True, winner="early_features")]).splitlines()
    assert table[2] == ("| digits | 20 (small) | 0.00, 0.00 | early_features | fine_tune_all, early_features | 1/2 | "
                        "90.0% / 80.0% / 95.0%; 90.0% / 90.0% / 95.0% |")
    assert table[-1].endswith("1/2 = 50%")
