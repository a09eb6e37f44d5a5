"""VL-CheckList (Zhao et al., 2022) as a TFDS dataset.

VL-CheckList tests objects, attributes and relations with image-text pairs
drawn from Visual Genome, VAW, SWiG and HAKE. The release
(github.com/om-ai-lab/VL-CheckList) holds one JSON file per (type, corpus),
e.g. `data/Attribute/vg/color.json`, each a list of rows
`[image_path, {"POS": [captions], "NEG": [captions]}]`, with `image_path`
relative to the corpus's image root (`IMG_ROOT` in its
`corpus/v1/<type>/<corpus>.yaml`: `vg/`, `swig/` or `hake/`).

One config per category (`object`, `attribute`, `relation`) and one split
per corpus file, so that each file's accuracy, which VL-CheckList averages
over files and sources (see hardpos_jax/evals/vl_checklist.py), is one
split's. Each row is one example: its image, `caption` = POS[0] and
`hard_negative` = NEG[0], the only pair VL-CheckList's itc task scores
(vl_checklist/evaluate.py, `Evaluate.eval`, lines 183-184 at commit 8855c61:
`texts_pos = [z["texts_pos"][0] ...]`, `texts_neg = [z["texts_neg"][0]
...]`); SWiG rows list three of each, the rest never scored. Rows are kept
as released: repeated rows, and rows whose POS[0] equals NEG[0] (a tie,
which always fails), included.
"""

from __future__ import annotations

from collections.abc import Iterator
import dataclasses
import functools
import pathlib
from typing import Any

import tensorflow_datasets as tfds

from tfds_builders import common

CATEGORIES = ("object", "attribute", "relation")


@dataclasses.dataclass(frozen=True)
class CorpusFile:
  """One VL-CheckList corpus file, stored as one split.

  Attributes:
    category: "object", "attribute" or "relation": the config.
    type: VL-CheckList's type (its `DATA.TYPES` entry), e.g.
      "Object/Location/center".
    source: the dataset that vl_checklist/corpus.json groups the file under
      ("vg", "vaw", "swig" or "hake").
    corpus: VL-CheckList's corpus name (`DATA.TEST_DATA`), e.g. "swig_agent".
    path: the JSON file relative to manual_dir (the yaml's `ANNO_PATH`).
    image_root: the folder under manual_dir that the file's image paths are
      relative to (the yaml's `IMG_ROOT`).
  """

  category: str
  type: str
  source: str
  corpus: str
  path: str
  image_root: str

  @property
  def split(self) -> str:
    """The TFDS split: the type below the category, then the corpus, e.g.
    "location_center_swig_agent"."""
    kind = self.type.split("/", 1)[1].lower().replace("/", "_")
    return f"{kind}_{self.corpus}"


def _corpus_files() -> tuple[CorpusFile, ...]:
  """Every file VL-CheckList's itc configs evaluate, category by category.

  The paths and image roots are those of om-ai-lab/VL-CheckList
  `corpus/v1/<type>/<corpus>.yaml` (e.g. `corpus/v1/Object/Size/large/
  swig_tool.yaml`: `ANNO_PATH: "data/Object/Size/swig_size/swig_tool/
  swig_tool_large.json"`, `IMG_ROOT: "swig/"`); the corpora per type are
  those of its `configs/our_clip_{object,attribute,relation}.yaml`
  (`TEST_DATA`).
  """
  files = []
  for aspect, values in (("Location", ("center", "mid", "margin")),
                         ("Size", ("large", "medium", "small"))):
    # E.g. data/Object/Size/swig_size/.
    folder = {source: f"data/Object/{aspect}/{source}_{aspect.lower()}"
              for source in ("hake", "swig", "vg")}
    for value in values:
      kind = f"Object/{aspect}/{value}"
      files.append(CorpusFile("object", kind, "hake", "hake",
                              f"{folder['hake']}/hake_obj_{value}.json",
                              "hake"))
      for role in ("agent", "destination", "item", "tool"):
        corpus = f"swig_{role}"
        files.append(CorpusFile(
            "object", kind, "swig", corpus,
            f"{folder['swig']}/{corpus}/{corpus}_{value}.json", "swig"))
      for role in ("obj", "subj"):
        files.append(CorpusFile(
            "object", kind, "vg", f"vg_{role}",
            f"{folder['vg']}/vg_{role}_{value}.json", "vg"))
  for kind in ("color", "material", "size", "state", "action"):
    # VAW annotates Visual Genome images: both read them from vg/.
    for source in ("vg", "vaw"):
      files.append(CorpusFile("attribute", f"Attribute/{kind}", source,
                              source, f"data/Attribute/{source}/{kind}.json",
                              "vg"))
  files += [
      CorpusFile("relation", "Relation/action", "vg", "vg",
                 "data/Relation/vg/action.json", "vg"),
      CorpusFile("relation", "Relation/action", "swig", "swig",
                 "data/Relation/swig_action.json", "swig"),
      CorpusFile("relation", "Relation/action", "hake", "hake",
                 "data/Relation/hake_action.json", "hake"),
      CorpusFile("relation", "Relation/spatial", "vg", "vg",
                 "data/Relation/vg/spatial.json", "vg"),
  ]
  return tuple(files)


FILES = _corpus_files()

_MANUAL_DOWNLOAD_INSTRUCTIONS = """\
manual_dir (or manual_dir/vl_checklist/) holds the `data/` folder of
github.com/om-ai-lab/VL-CheckList as released (e.g.
`data/Attribute/vg/color.json`) and the images under the roots its JSON
paths are relative to, as in its DATASETS.md: `vg/VG_100K/`, `vg/VG_100K_2/`
(Visual Genome, also VAW's images), `swig/` (SWiG images_512.zip) and
`hake/` (HAKE: hake_images_20190730/, hake_images_20200614/, hcvrd/,
hico_20160224_det/images/{train2015,test2015}/, openimages/, pic/,
vcoco/{train2014,val2014}/). A config needs the image roots of its files
(attribute: vg; object and relation: vg, swig, hake). See docs/data.md.
"""


class VlChecklist(common.ManualDataBuilder):
  """VL-CheckList's three categories, one split per corpus file."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL_DOWNLOAD_INSTRUCTIONS
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(
          name=category,
          description=", ".join(sorted({f.type for f in FILES
                                        if f.category == category})))
      for category in CATEGORIES
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    return common.dataset_info(
        self,
        description=__doc__,
        # `caption` and `hard_negative`: POS[0] and NEG[0] of the row;
        # `index`: its position in its JSON file (0-based); the CorpusFile's
        # type, source and corpus, e.g. "Object/Location/center", "swig",
        # "swig_agent"; `image_path` as released: relative to the corpus's
        # image root.
        features=common.item_features(
            ("caption", "hard_negative"),
            **{k: tfds.features.Text()
               for k in ("type", "source", "corpus", "image_path")}),
        homepage="https://github.com/om-ai-lab/VL-CheckList",
        citation="Zhao et al., VL-CheckList: Evaluating Pre-trained "
        "Vision-Language Models with Objects, Attributes and Relations, "
        "arXiv 2207.00221, 2022.",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = pathlib.Path(dl_manager.manual_dir)
    files = [f for f in FILES if f.category == self.builder_config.name]
    # Checked up front so that a missing download stops the build before
    # anything is written, as one error that lists every missing part.
    common.check_present(f"vl_checklist/{self.builder_config.name}",
                         files=[manual_dir / f.path for f in files],
                         dirs=[manual_dir / f.image_root for f in files])
    return {
        f.split: self._generate_examples(
            f.split, manual_dir / f.path, _rows(manual_dir / f.path),
            functools.partial(_make_example, manual_dir, f))
        for f in files
    }


def _rows(path: pathlib.Path) -> Iterator[tuple[str, tuple[int, Any]]]:
  """Yields `("row i", (i, row))` for the JSON list at `path`, parsed only
  when the split is written, so one file at a time is held in memory."""
  for i, row in enumerate(common.read_json_list(path)):
    yield f"row {i}", (i, row)


def _first_caption(texts: Any, key: str) -> str:
  captions = common.field(texts, key, list)
  if not captions:
    raise common.DataError(f"{key!r} is an empty list")
  return common.check_text(captions[0], f"{key}[0]")


def _make_example(manual_dir: pathlib.Path, file: CorpusFile,
                  item: tuple[int, Any]) -> tuple[int, common.Example]:
  """One row `[image_path, {"POS": [...], "NEG": [...]}]` as an example.

  VL-CheckList joins `IMG_ROOT` and the row's path (vl_checklist/
  data_loader.py, `load_itc_samples`, lines 48-56 at commit 8855c61) and
  silently drops a row whose image does not exist (`if
  os.path.exists(path)`); here a missing image is a DataError, which
  `skip_bad_examples=True` turns into a counted skip.
  """
  index, row = item
  if not (isinstance(row, list) and len(row) == 2):
    raise common.DataError(
        f'expected [image_path, {{"POS": [...], "NEG": [...]}}], got'
        f" {row!r:.200}")
  image_path = common.check_text(row[0], "the image path")
  texts = common.as_object(row[1], "the captions")
  return index, {
      "image": common.read_image(
          common.manual_path(manual_dir / file.image_root, image_path)),
      "caption": _first_caption(texts, "POS"),
      "hard_negative": _first_caption(texts, "NEG"),
      "index": index,
      "type": file.type,
      "source": file.source,
      "corpus": file.corpus,
      "image_path": image_path,
  }
