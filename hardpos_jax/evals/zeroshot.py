"""Zero-shot classification with OpenAI's prompt ensembles: top-1 and top-5.

Each class is embedded as OpenAI's notebook does (`zeroshot_classifier` in
Prompt_Engineering_for_ImageNet.ipynb): its name in every template, each
prompt's unit text embedding, their mean, L2-normalised. An image's class
scores are its cosine similarities to the C class embeddings (OpenAI's logit
scale of 100 does not change their order). Its rank, from
`scoring.rank_gallery`, is how many wrong classes score at least as high as
its label: top-k accuracy is mean(rank < k), so a tie counts against the
model (OpenAI's `topk` breaks ties by class order; float32 ties are rare).

Tasks (TASKS), images in `image` and labels in `label`; class names and
templates from openai/CLIP (`zeroshot_prompts`):

| task     | TFDS dataset | split      | classes | templates |
|----------|--------------|------------|---------|-----------|
| cifar10  | cifar10      | test       | 10      | 18        |
| cifar100 | cifar100     | test       | 100     | 18        |
| imagenet | imagenet2012 | validation | 1000    | 80        |

TFDS downloads CIFAR itself; imagenet2012 needs `ILSVRC2012_img_val.tar` in
its manual_dir. Labels are read in a pass of their own before the images.

Legend: N images, C classes, P templates, D width.
"""

from collections.abc import Callable, Mapping, Sequence
import dataclasses
from typing import Any

import jax
import numpy as np

from hardpos_jax.evals import encoding
from hardpos_jax.evals import plots
from hardpos_jax.evals import scoring
from hardpos_jax.evals import zeroshot_prompts as prompts

TOP_K = (1, 5)
# Columns of the scores CSV, one row per image.
SCORE_COLUMNS = ("label", "prediction", "rank")


@dataclasses.dataclass(frozen=True)
class Task:
  """A classification split and the prompts for its classes.

  Attributes:
    dataset: TFDS name (with config).
    split: the split's name.
    label_key: the ClassLabel feature.
    classes: the C class names, in label order.
    templates: the P templates, each with one "{}".
  """

  dataset: str
  split: str
  label_key: str
  classes: tuple[str, ...]
  templates: tuple[str, ...]


TASKS = {
    "cifar10": Task("cifar10", "test", "label", prompts.CIFAR10_CLASSES,
                    prompts.CIFAR_TEMPLATES),
    "cifar100": Task("cifar100", "test", "label", prompts.CIFAR100_CLASSES,
                     prompts.CIFAR_TEMPLATES),
    "imagenet": Task("imagenet2012", "validation", "label",
                     prompts.IMAGENET_CLASSES, prompts.IMAGENET_TEMPLATES),
}


def benchmark_splits(task: str) -> dict[str, tuple[str, str]]:
  """{task: (TFDS dataset, split)} of the TASKS row `task`."""
  if task not in TASKS:
    raise ValueError(f"Unknown zero-shot task {task!r}; choose from "
                     f"{sorted(TASKS)}")
  return {task: (TASKS[task].dataset, TASKS[task].split)}


def prompt_texts(classes: Sequence[str],
                 templates: Sequence[str]) -> list[str]:
  """The C * P prompts, class-major: prompt c * P + p is template p of c."""
  return [t.format(c) for c in classes for t in templates]


def class_embeddings(ztxt: np.ndarray, num_classes: int) -> np.ndarray:
  """OpenAI's ensemble: per class, the unit mean of its prompts' embeddings.

  Args:
    ztxt: float32 [C * P, D] unit prompt embeddings, class-major.
    num_classes: C.

  Returns:
    float32 [C, D] unit class embeddings.
  """
  mean = ztxt.reshape(num_classes, -1, ztxt.shape[-1]).mean(axis=1)
  return (mean / np.linalg.norm(mean, axis=-1, keepdims=True)).astype(
      np.float32)


def read_labels(source: Any, label_key: str, num_classes: int,
                before_chunk: Callable[[], None] = lambda: None
                ) -> np.ndarray:
  """int64 [N] the split's labels, checked to lie in [0, C); `before_chunk`:
  see `scoring.read_records`."""
  labels = [int(r[label_key])
            for _, r in scoring.read_records(source, before_chunk)]
  labels = np.asarray(labels, np.int64)
  bad = (labels < 0) | (labels >= num_classes)
  if bad.any():
    raise ValueError(f"{int(bad.sum())} labels are outside [0, {num_classes})"
                     f", e.g. {labels[bad][0]}: class names and dataset "
                     "disagree")
  return labels


@dataclasses.dataclass(frozen=True)
class ZeroShotScores(scoring.SplitScores):
  """A split's zero-shot predictions: `scoring.SplitScores` whose `index` is
  each image's source position and `scores` int64 [N, 3] per image
  (SCORE_COLUMNS): its label, the best class and the label's rank;
  `num_texts` is C * P prompts.

  Attributes:
    num_classes: C.
    num_templates: P.
  """

  num_classes: int = 0
  num_templates: int = 0


def score_split(encoders: encoding.Encoders, params: Any, tokenizer: Any,
                source: Any, subset: str) -> ZeroShotScores:
  """Classifies every image of a split among its task's classes.

  Args:
    encoders: the towers and mesh.
    params: the model params (any placement).
    tokenizer: a `hardpos_jax.tokenizer.Tokenizer`.
    source: the split.
    subset: its TASKS row.

  Returns:
    The `ZeroShotScores`.
  """
  task = TASKS[subset]
  num_classes = len(task.classes)
  declared = source.dataset_info.features[task.label_key].num_classes
  if declared != num_classes:
    raise ValueError(f"{task.dataset} has {declared} classes; {subset} names "
                     f"{num_classes}")
  labels = read_labels(source, task.label_key, num_classes,
                       encoders.before_batch)
  params = jax.device_put(params, encoders.replicated)
  ztxt, length, truncated = encoding.encode_texts(
      encoders, params, tokenizer, prompt_texts(task.classes, task.templates))
  zimg = encoding.encode_images(encoders, params, source,
                               np.arange(len(labels)))
  ranks = scoring.rank_gallery(encoders, zimg, labels,
                               class_embeddings(ztxt, num_classes),
                               np.arange(num_classes))
  return ZeroShotScores(
      index=np.arange(len(labels), dtype=np.int64),
      scores=np.column_stack([labels, ranks.top, ranks.rivals]),
      num_images=len(labels), num_texts=len(ztxt), num_classes=num_classes,
      num_templates=len(task.templates), text_length=length,
      num_truncated=truncated)


def summarize(scores: Mapping[str, ZeroShotScores]) -> dict:
  """Top-k accuracy per task.

  Args:
    scores: {task: its scores}.

  Returns:
    {"subsets": {task: {"top1": ..., "top5": ..., and counts}}}.
  """
  return {"subsets": {
      name: {**{f"top{k}": float((s.scores[:, 2] < k).mean()) for k in TOP_K},
             "count": s.num_images, "classes": s.num_classes,
             "templates": s.num_templates, "texts": s.num_texts,
             "text_length": s.text_length, "truncated": s.num_truncated}
      for name, s in scores.items()}}


def headline(summary: dict) -> dict[str, float]:
  """Top-1 accuracy per task."""
  return {f"{name} top-1": row["top1"]
          for name, row in summary["subsets"].items()}


def format_table(summary: dict) -> str:
  """A markdown table of `summary` (from `summarize`), accuracy in percent."""
  lines = ["| task | images | classes | templates | "
           + " | ".join(f"top-{k}" for k in TOP_K) + " |",
           "|---" * (4 + len(TOP_K)) + "|"]
  for name, row in summary["subsets"].items():
    lines.append(f"| {name} | {row['count']} | {row['classes']} | "
                 f"{row['templates']} | "
                 + " | ".join(f"{100 * row[f'top{k}']:.1f}" for k in TOP_K)
                 + " |")
  return "\n".join(lines)


def plot(summary: dict, path: str) -> None:
  """Writes a PNG of the top-k accuracy per task."""
  rows = summary["subsets"]
  plots.bars(path, summary["eval"], list(rows), {
      f"top-{k}": [row[f"top{k}"] for row in rows.values()] for k in TOP_K},
             figwidth=6, ylabel="accuracy (%)", full_scale=True)
