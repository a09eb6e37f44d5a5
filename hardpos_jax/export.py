"""`python -m hardpos_jax.export`: writes a checkpoint in another format.

  python -m hardpos_jax.export --input=ViT-B-32.pt --output=out/hf --to=hf
  python -m hardpos_jax.export --input=runs/pos_neg \
      --output=out/model.safetensors --to=open_clip

`--input` is anything `hardpos_jax.load` reads; `--to` is `Model.export`'s
format: `hf` (a `CLIPModel` directory), `open_clip` (an OpenAI-key state
dict) or `flax` (an orbax export).
"""

from collections.abc import Sequence

from absl import app
from absl import flags

import hardpos_jax


def main(argv: Sequence[str]) -> None:
  del argv
  f = flags.FLAGS
  model = hardpos_jax.load(f.input, vocab=f.vocab, quick_gelu=f.quick_gelu)
  model.export(f.to, f.output)
  print(f"Wrote {f.to} model to {f.output}")


if __name__ == "__main__":
  # Defined here, not at import, so importing this module claims no flags.
  flags.DEFINE_string("input", None,
                      "OpenAI/open_clip file, HF dir, export or workdir.")
  flags.DEFINE_string("output", None, "Output file or directory.")
  flags.DEFINE_enum("to", None, ["hf", "open_clip", "flax"], "Output format.")
  flags.DEFINE_bool("quick_gelu", True, "Activation for OpenAI-key inputs.")
  flags.DEFINE_string("vocab", None, "BPE .txt.gz or HF vocab dir.")
  flags.mark_flags_as_required(["input", "output", "to"])
  app.run(main)
