"""notebooks/evaluate.ipynb runs top to bottom (CPU, tiny model, synthetic)."""

import os

import nbclient
import nbformat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_evaluate_notebook_executes(tmp_path):
  nb = nbformat.read(os.path.join(ROOT, "notebooks", "evaluate.ipynb"),
                     as_version=4)
  (params,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags",
                                                                      [])]
  # Injected after the defaults, as papermill does.
  params.source += (f"\nINSTALL = False\nDATA_DIR = {str(tmp_path / 'tfds')!r}"
                    f"\nOUT_DIR = {str(tmp_path / 'out')!r}\n")
  client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                   resources={"metadata": {"path": ROOT}})
  client.execute()
  outputs = "".join(o.get("text", "") for c in nb.cells
                    for o in c.get("outputs", []))
  assert "| swap |" in outputs and "Brittle" in outputs
  # The suite ran what was there and named what was not.
  assert "No data for" in outputs and "sugar_crepe (7 subsets)" in outputs
  assert "| model | synthetic_tiny replace_att Orig" not in outputs
  assert "synthetic_tiny REPLACE (macro) Aug" in outputs
  for name in ("synthetic_tiny", "suite"):
    assert os.path.isfile(tmp_path / "out" / f"{name}.png")
  images = [o for c in nb.cells for o in c.get("outputs", [])
            if "image/png" in o.get("data", {})]
  assert images
