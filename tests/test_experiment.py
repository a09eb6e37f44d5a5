"""experiments/synthetic_paper.py: verdict rules, and a tiny end-to-end run."""

import os
import subprocess
import sys

import pytest

from experiments import synthetic_paper as exp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("sign, lo, hi, want", [
    (1, 0.5, 3.0, "as the paper"),
    (1, 0.0, 3.0, "no difference detected"),  # touching 0 is not excluding it
    (1, -2.0, -0.1, "opposite"),
    (-1, -2.0, -0.1, "as the paper"),
    (-1, 0.2, 1.0, "opposite"),
    (0, -0.9, 2.0, "as the paper"),  # not lower by 1 point or more
    (0, -1.5, 2.0, "inconclusive"),
    (0, -3.0, -1.2, "opposite"),
])
def test_judge(sign, lo, hi, want):
  assert exp.judge(sign, lo, hi) == want


@pytest.mark.parametrize("judged, want", [
    (["as the paper", "as the paper"], "reproduced"),
    (["as the paper", "no difference detected"], "partly reproduced"),
    (["as the paper", "opposite"], "reversed"),
    (["no difference detected", "inconclusive"], "not reproduced"),
])
def test_verdict(judged, want):
  assert exp.verdict(judged) == want


@pytest.mark.slow
def test_experiment_script_tiny(tmp_path):
  out = tmp_path / "docs"
  out.mkdir()
  hand = "# Title\n\nDesign by hand.\n\n"
  (out / "RESULTS.md").write_text(
      f"{hand}{exp.BEGIN}\nold\n{exp.END}\n\nReading by hand.\n")
  result = subprocess.run(
      [sys.executable, "-m", "experiments.synthetic_paper",
       f"--workdir={tmp_path / 'runs'}", "--tiny", "--seeds=0,1",
       "--variants=control,hn,hn_hp", f"--out={out}"], cwd=ROOT,
      capture_output=True, text=True, timeout=1200)
  assert result.returncode == 0, result.stderr[-3000:]
  report = (out / "RESULTS.md").read_text()
  # The hand-written parts are kept, the generated block replaced.
  assert report.startswith(hand + exp.BEGIN)
  assert report.rstrip().endswith(exp.END + "\n\nReading by hand.")
  assert "\nold\n" not in report
  rows = [line.split(" | ")[:2] for line in report.splitlines()
          if line.startswith("| ") and " | seeds |" not in line
          and "Orig |" not in line]
  assert rows[:4] == [["| pretrained (no fine-tuning)", "1"],
                      ["| captions only (control)", "2"], ["| HN", "2"],
                      ["| HN + HP", "2"]]
  # Every effect on both benchmarks, each with a verdict and intervals.
  for effect in exp.EFFECTS:
    for bench in exp.BENCHMARKS:
      line = next(l for l in report.splitlines()
                  if l.startswith(f"- **{effect}, {bench}: "))
      assert line.count("[") == len(exp.EFFECTS[effect])
  for png in ("results.png", "results_curves.png"):
    assert (out / png).stat().st_size > 0
  # Curves: every fine-tune evaluated at each eval_every step.
  evals = sorted(os.listdir(tmp_path / "runs" / "hn_seed1" / "eval"))
  assert evals == ["2", "4"]
