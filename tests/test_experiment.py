"""experiments/synthetic_paper.py runs end to end at the tiny size."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_experiment_script_tiny(tmp_path):
  out = tmp_path / "docs"
  result = subprocess.run(
      [sys.executable, "experiments/synthetic_paper.py",
       f"--workdir={tmp_path / 'runs'}", "--tiny", "--seeds=0",
       "--variants=control,hn,hn_hp", f"--out={out}"], cwd=ROOT,
      capture_output=True, text=True, timeout=1200)
  assert result.returncode == 0, result.stderr[-3000:]
  report = (out / "RESULTS.md").read_text()
  # The pretrained row and the three variants asked for.
  rows = [line for line in report.splitlines() if line.startswith("| ")
          and not line.startswith("| model")]
  assert [row.split(" | ")[0] for row in rows] == [
      "| pretrained (no fine-tuning)", "| captions only (control)", "| HN",
      "| HN + HP"]
  assert "HN + HP vs HN: augmented" in report
  assert report.rstrip().endswith("-->")  # the empty notes section
  assert (out / "results.png").stat().st_size > 0
