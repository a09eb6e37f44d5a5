"""Hard positives from a local causal LM: `generate.py --backend=llm`.

`LLMBackend` prompts the model with the paper's SWAP and REPLACE prompts
(`SWAP_PROMPT`, `REPLACE_PROMPT`) and keeps a reply only if
`parse_llm_output` finds in it a faithful edit of the caption. transformers
is imported only when an `LLMBackend` is made.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
import difflib
import pathlib
import re

from hardpos_jax import caption_rules
from hardpos_jax import caption_tokens
from tfds_builders.coco_hard_pos_neg import layout

# The paper's prompts, as in its release (generate_hard_positives.py of
# github.com/amitakamath/hard_positives): SWAP with five worked examples,
# REPLACE zero-shot.
SWAP_PROMPT = """\
Swap the words around the word "and" in a sentence without changing the \
meaning. Only respond with the changed sentence.

Input: three giraffes and two antelope
Output: two antelopes and three giraffes

Input: a blue and white stained glass clock shows the time
Output: a white and blue stained glass clock shows the time

Input: a mixture of rice and broccoli are put together
Output: a mixture of broccoli and rice are put together

Input: a bathroom with a sink, toilet and shower
Output: a bathroom with a sink, shower and toilet

Input: there is a man wearing glasses and holding a wine bottle
Output: there is a man holding a wine bottle and wearing glasses

Input: {caption}
Output:"""
REPLACE_PROMPT = """\
Replace one word in the input sentence with a synonym, without changing the \
meaning of the sentence. Only output the changed sentence.
Input: {caption}
Output:"""
# SWAP is asked only of captions that have an "and" to swap around.
_AND_RE = re.compile(r"\band\b", re.IGNORECASE)


def _stem(word: str) -> str:
  """What a swap may not change: "antelope(s)", "a"/"an" are the same."""
  return "a" if word == "an" else word.removesuffix("s")


def parse_llm_output(text: str, caption: str, kind: str) -> str | None:
  """Returns the hard positive in an LLM's reply, or None if it has none.

  Args:
    text: the generated text after the prompt.
    caption: the caption it was asked to edit.
    kind: "swap" (the reply must hold the caption's words, reordered; plural
      "s" and "a"/"an" may change) or "replace" (one run of at most four
      words changed).

  Returns:
    The first non-empty line, stripped of quotes, if it passes those checks
    and differs from the caption; else None.
  """
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  if not lines:
    return None
  reply = lines[0].removeprefix("Output:").strip().strip("\"'").strip()
  if not reply or reply == layout.NO_HARD_POSITIVE:
    return None
  if caption_tokens.normal_form(reply) == caption_tokens.normal_form(caption):
    return None
  old = caption_tokens.caption_words(caption)
  new = caption_tokens.caption_words(reply)
  if not new:
    return None
  if kind == "swap":
    same_words = collections.Counter(map(_stem, old)) == collections.Counter(
        map(_stem, new))
    return reply if same_words else None
  changes = [op for op in difflib.SequenceMatcher(a=old, b=new).get_opcodes()
             if op[0] != "equal"]
  if len(changes) != 1:
    return None
  _, i1, i2, j1, j2 = changes[0]
  return reply if max(i2 - i1, j2 - j1) <= 4 else None


class LLMBackend:
  """Hard positives from a local causal LM, prompted as in the paper.

  SWAP is asked of captions with an "and", REPLACE of all; replies that
  `parse_llm_output` rejects become None. Decoding is greedy.
  """

  def __init__(self, model_path: str, *, seed: int = 0, batch_size: int = 8,
               max_new_tokens: int = 32):
    path = pathlib.Path(model_path)
    if not path.is_dir():
      raise ValueError(
          f"--llm_model {model_path!r} is not a local model directory;"
          " nothing is downloaded.")
    # Imported here: only this backend needs transformers.
    import transformers  # pylint: disable=g-import-not-at-top

    transformers.set_seed(seed)
    tokenizer = transformers.AutoTokenizer.from_pretrained(
        path, local_files_only=True)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        path, local_files_only=True)
    # Decoder-only models pad on the left to generate in batches.
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
      tokenizer.pad_token = tokenizer.eos_token
    self._pipe = transformers.pipeline(
        "text-generation", model=model, tokenizer=tokenizer)
    self._batch_size = batch_size
    self._max_new_tokens = max_new_tokens

  def _ask(self, prompt: str, captions: Sequence[str], kind: str,
           rule: str) -> list[caption_rules.Edit | None]:
    if not captions:
      return []
    outputs = self._pipe(
        [prompt.format(caption=c) for c in captions],
        return_full_text=False,
        max_new_tokens=self._max_new_tokens,
        do_sample=False,
        batch_size=self._batch_size,
        pad_token_id=self._pipe.tokenizer.pad_token_id,
    )
    if len(outputs) != len(captions):
      raise RuntimeError(f"The model answered {len(outputs)} of "
                         f"{len(captions)} prompts.")
    edits = []
    for caption, output in zip(captions, outputs):
      text = parse_llm_output(output[0]["generated_text"], caption, kind)
      edits.append(None if text is None else caption_rules.Edit(text, rule))
    return edits

  def hard_positives(
      self, captions: Sequence[str]
  ) -> list[caption_rules.HardPositives]:
    with_and = [i for i, c in enumerate(captions) if _AND_RE.search(c)]
    swaps = dict(zip(with_and, self._ask(
        SWAP_PROMPT, [captions[i] for i in with_and], "swap", "llm_swap")))
    replaces = self._ask(REPLACE_PROMPT, captions, "replace", "llm_replace")
    return [caption_rules.HardPositives(swap=swaps.get(i), replace=replaces[i])
            for i in range(len(captions))]
