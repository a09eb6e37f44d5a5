#!/usr/bin/env bash
# Fresh-machine set-up, safe to rerun: a virtualenv in .venv with the pinned,
# tested set of packages, and OpenAI's BPE vocabulary for the tokenizer.
set -euo pipefail
cd "$(dirname "$0")/.."

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check \
  -c requirements/constraints.txt -e ".[test]"

# OpenAI's bpe_simple_vocab_16e6.txt.gz ships inside the open_clip wheel; we
# take the file only (open_clip itself must not be installed next to CPU torch).
vocab="${HARDPOS_JAX_BPE:-$HOME/.cache/hardpos_jax/bpe_simple_vocab_16e6.txt.gz}"
if [ ! -s "$vocab" ]; then
  tmp=$(mktemp -d)
  .venv/bin/pip download -q --no-deps --disable-pip-version-check \
    open_clip_torch==3.3.0 -d "$tmp"
  mkdir -p "$(dirname "$vocab")"
  .venv/bin/python - "$tmp" "$vocab" <<'PY'
import glob, os, sys, zipfile
tmp, out = sys.argv[1], sys.argv[2]
(whl,) = glob.glob(os.path.join(tmp, "*.whl"))
data = zipfile.ZipFile(whl).read("open_clip/bpe_simple_vocab_16e6.txt.gz")
with open(out + ".part", "wb") as f:
  f.write(data)
os.replace(out + ".part", out)
PY
  rm -rf "$tmp"
fi
echo "hardpos_jax set up: .venv ready, BPE vocabulary at $vocab"
