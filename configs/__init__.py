"""Training recipes: `configs/<recipe>.py:get_config(arg)` (run from the repo root)."""
