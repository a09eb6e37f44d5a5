"""Tests of the hard_positives, sugar_crepe and coco_hard_pos_neg builders.

Each builder is built from small fixtures in the released file formats, with
images drawn by PIL, into tmp dirs. Where the real files are present (under
$HARDPOS_SHARED_DATA, by default ../shared/data next to the repository), a
few of their rows are built too, with stand-in images.
"""

import io
import json
import os
import pathlib

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import records
from tfds_builders import registered
from tfds_builders import common
from tfds_builders.coco_hard_pos_neg import coco_hard_pos_neg
from tfds_builders.coco_hard_pos_neg import layout

tf.config.set_visible_devices([], "GPU")
tfds.disable_progress_bar()

SHARED_DATA = pathlib.Path(
    os.environ.get(
        "HARDPOS_SHARED_DATA",
        pathlib.Path(__file__).resolve().parents[2] / "shared" / "data",
    )
)
REAL_HARD_POSITIVES = SHARED_DATA / "hard_positives"
REAL_SUGAR_CREPE = SHARED_DATA / "sugar_crepe"
REAL_NEGCLIP_TSV = SHARED_DATA / "negclip" / "valid_neg_clip.tsv"

RED, GREEN, BLUE = (200, 30, 40), (30, 190, 60), (20, 40, 210)


# ----------------------------------------------------------------- helpers ---


def write_image(path, color=RED, size=(32, 24), mode="RGB", fmt="JPEG"):
  """Writes a solid-colour image (converted to `mode`) and returns its path."""
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.new("RGB", size, color).convert(mode).save(path, format=fmt)
  return path


def write_json(path, value):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(value))


def write_lines(path, values):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join(json.dumps(v) + "\n" for v in values))


def make_builder(name, config, tmp_path, **kwargs):
  return tfds.builder(name, config=config, data_dir=tmp_path / "tfds", **kwargs)


def build(name, config, manual_dir, tmp_path, **kwargs):
  builder = make_builder(name, config, tmp_path, **kwargs)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
  )
  return builder


def read_split(builder, split, **kwargs):
  """Returns the split's examples in stored order."""
  source = builder.as_data_source(split=split, **kwargs)
  return [source[i] for i in range(len(source))]


def as_text(value):
  return value.decode() if isinstance(value, bytes) else value


def assert_build_fails(name, config, manual_dir, tmp_path, *needles):
  """Builds, expects one DataError naming `needles`, checks nothing is left."""
  with pytest.raises(common.DataError) as info:
    build(name, config, manual_dir, tmp_path)
  for needle in needles:
    assert str(needle) in str(info.value)
  # TFDS writes into a tmp dir and renames it on success only.
  fresh = make_builder(name, config, tmp_path)
  assert not fresh.is_prepared()
  assert not fresh.info.splits
  leftovers = [
      p for p in (tmp_path / "tfds").rglob("*") if "incomplete" in p.name
  ]
  assert not leftovers
  return str(info.value)


# -------------------------------------------------------- hard_positives ---

REPLACE_ROWS = [
    (
        "3968",
        "VG_100K_2",
        "chair in room",
        "chair out of room",
        "chair within room",
    ),
    ("3968", "VG_100K_2", "white chair", "black chair", "ivory chair"),
    ("77", "VG_100K", "plant cove red", "plant cove blue", "plant covecrimson"),
    ("91", "VG_100K", "black cat", "white cat", "ebony cat"),
]


def replace_rows(rows=REPLACE_ROWS):
  """Returns (data rows, swapped_data rows) in the released REPLACE format."""
  data, swapped = [], []
  for image_id, folder, c, c_n, c_p in rows:
    common_fields = {
        "image_id": image_id,
        "image_path": f"data/{folder}/{image_id}.jpg",
    }
    data.append({**common_fields, "true_caption": c, "false_caption": c_n})
    swapped.append({**common_fields, "true_caption": c_p, "false_caption": c_n})
  return data, swapped


def write_replace(
    manual_dir, data, swapped, file_name="vl_checklist_attributes.json"
):
  write_json(manual_dir / "data" / file_name, data)
  write_json(manual_dir / "swapped_data" / file_name, swapped)


@pytest.fixture
def replace_dir(tmp_path):
  """A REPLACE manual_dir: RGB, greyscale and CMYK JPEGs."""
  manual_dir = tmp_path / "manual"
  write_replace(manual_dir, *replace_rows())
  write_image(manual_dir / "data/VG_100K_2/3968.jpg", RED)
  write_image(manual_dir / "data/VG_100K/77.jpg", GREEN, mode="L")
  write_image(manual_dir / "data/VG_100K/91.jpg", BLUE, mode="CMYK")
  return manual_dir


def test_hard_positives_replace(replace_dir, tmp_path):
  builder = build("hard_positives", "replace_att", replace_dir, tmp_path)
  assert builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD
  assert list(builder.data_path.glob("*.array_record*"))
  assert builder.info.splits["test"].num_examples == len(REPLACE_ROWS)
  assert builder.info.metadata["skipped"]["test"]["count"] == 0

  examples = {e["index"]: e for e in read_split(builder, "test")}
  assert sorted(examples) == list(range(len(REPLACE_ROWS)))
  for index, (image_id, _, c, c_n, c_p) in enumerate(REPLACE_ROWS):
    example = examples[index]
    assert as_text(example["caption"]) == c
    assert as_text(example["hard_negative"]) == c_n
    # Broken released captions ("covecrimson") are kept as they are.
    assert as_text(example["hard_positive"]) == c_p
    assert as_text(example["image_id"]) == image_id
    assert example["image"].shape == (24, 32, 3)
  # Greyscale and CMYK sources come out as 3-channel RGB of their colour.
  grey_level = Image.new("RGB", (1, 1), GREEN).convert("L").getpixel((0, 0))
  np.testing.assert_allclose(
      examples[2]["image"].astype(float).mean(axis=(0, 1)),
      [grey_level] * 3,
      atol=3,
  )
  np.testing.assert_allclose(
      examples[3]["image"].astype(float).mean(axis=(0, 1)), BLUE, atol=12
  )

  # An RGB JPEG is stored byte for byte.
  raw = read_split(
      builder, "test", decoders={"image": tfds.decode.SkipDecoding()}
  )
  stored = {e["index"]: e["image"] for e in raw}
  source = (replace_dir / "data/VG_100K_2/3968.jpg").read_bytes()
  assert stored[0] == stored[1] == source
  assert stored[3] != (replace_dir / "data/VG_100K/91.jpg").read_bytes()


def test_hard_positives_swap_crop_matches_aro(tmp_path):
  manual_dir = tmp_path / "manual"
  # A smooth gradient, so JPEG re-encoding changes pixels only slightly and
  # an off-by-one crop would show.
  yy, xx = np.mgrid[0:60, 0:80]
  pixels = np.stack([xx * 3, yy * 4, 255 - xx * 3], -1).astype(np.uint8)
  source = manual_dir / "images" / "2380003.jpg"
  source.parent.mkdir(parents=True)
  Image.fromarray(pixels).save(source, quality=98)
  boxes = [(5, 7, 20, 10), (10.4, 0.6, 30.2, 40.7)]
  rows = [
      {
          "image_path": "2380003.jpg",
          "bbox_x": x,
          "bbox_y": y,
          "bbox_w": w,
          "bbox_h": h,
          "true_caption": "the white road and the red house",
          "false_caption": "the red road and the white house",
          "attributes": ["white", "red"],
      }
      for x, y, w, h in boxes
  ]
  swapped = [
      {**r, "true_caption": "the red house and the white road"} for r in rows
  ]
  write_json(manual_dir / "data/visual_genome_attribution.json", rows)
  write_json(
      manual_dir / "swapped_data/visual_genome_attribution.json", swapped
  )

  builder = build("hard_positives", "swap", manual_dir, tmp_path)
  examples = {e["index"]: e for e in read_split(builder, "test")}
  for index, (x, y, w, h) in enumerate(boxes):
    # What ARO's VG_Attribution.__getitem__ feeds the model.
    expected = np.asarray(
        Image.open(source).convert("RGB").crop((x, y, x + w, y + h))
    )
    got = examples[index]["image"]
    assert got.shape == expected.shape
    assert np.abs(got.astype(int) - expected).mean() < 2.0
    assert as_text(examples[index]["image_id"]) == "2380003"
    assert (
        as_text(examples[index]["hard_positive"]) == swapped[0]["true_caption"]
    )


def test_hard_positives_misaligned_rows(replace_dir, tmp_path):
  data, swapped = replace_rows()
  swapped[2]["image_id"] = "78"
  write_replace(replace_dir, data, swapped)
  message = assert_build_fails(
      "hard_positives",
      "replace_att",
      replace_dir,
      tmp_path,
      "data/vl_checklist_attributes.json, row 2",
      "swapped_data/vl_checklist_attributes.json row 2",
      "'77'",
      "'78'",
  )
  assert "image_id" in message


def test_hard_positives_different_lengths(replace_dir, tmp_path):
  data, swapped = replace_rows()
  write_replace(replace_dir, data, swapped[:-1])
  assert_build_fails(
      "hard_positives",
      "replace_att",
      replace_dir,
      tmp_path,
      "data/vl_checklist_attributes.json has 4 rows",
      "swapped_data/vl_checklist_attributes.json has 3",
  )


def test_hard_positives_real_rows(tmp_path):
  """A few rows of the released REPLACE files, with stand-in images."""
  if not (REAL_HARD_POSITIVES / "data").is_dir():
    pytest.skip(f"no released files under {REAL_HARD_POSITIVES}")
  for config, file_name, picks in (
      ("replace_att", "vl_checklist_attributes.json", [0, 1, 2, 1546]),
      ("replace_rel", "vl_checklist_relations.json", [0, 1, 16867]),
  ):
    real = [
        json.loads((REAL_HARD_POSITIVES / d / file_name).read_text())
        for d in ("data", "swapped_data")
    ]
    manual_dir = tmp_path / config
    write_replace(
        manual_dir, *[[rows[i] for i in picks] for rows in real], file_name
    )
    for i in picks:
      write_image(manual_dir / real[0][i]["image_path"])
    builder = build("hard_positives", config, manual_dir, tmp_path / config)
    examples = {e["index"]: e for e in read_split(builder, "test")}
    for position, i in enumerate(picks):
      assert (
          as_text(examples[position]["caption"]) == real[0][i]["true_caption"]
      )
      assert (
          as_text(examples[position]["hard_positive"])
          == real[1][i]["true_caption"]
      )
      assert as_text(examples[position]["image_id"]) == real[0][i]["image_id"]
    if config == "replace_att":
      assert (
          as_text(examples[3]["hard_positive"])
          == "plant covecrimson in green leaf"
      )


# ----------------------------------------------------------- sugar_crepe ---

SUGAR_ITEMS = {
    "0": {
        "filename": "000000085329.jpg",
        "caption": "a cat",
        "negative_caption": "a big cat",
    },
    "2": {
        "filename": "000000562121.jpg",
        "caption": "two zebras",
        "negative_caption": "two striped zebras",
    },
}


def write_sugar_crepe(manual_dir, items, subset="add_att"):
  write_json(manual_dir / "data" / f"{subset}.json", items)
  for item in items.values():
    if isinstance(item, dict) and "filename" in item:
      write_image(manual_dir / "val2017" / item["filename"])


def test_sugar_crepe(tmp_path):
  manual_dir = tmp_path / "manual"
  write_sugar_crepe(manual_dir, SUGAR_ITEMS)
  builder = build("sugar_crepe", "add_att", manual_dir, tmp_path)
  examples = {e["id"]: e for e in read_split(builder, "test")}
  assert sorted(examples) == [0, 2]  # The keys, gaps included.
  for key, item in SUGAR_ITEMS.items():
    example = examples[int(key)]
    assert as_text(example["filename"]) == item["filename"]
    assert as_text(example["caption"]) == item["caption"]
    assert as_text(example["hard_negative"]) == item["negative_caption"]
    assert example["image"].shape == (24, 32, 3)


def test_sugar_crepe_configs():
  names = {c.name for c in tfds.builder_cls("sugar_crepe").BUILDER_CONFIGS}
  assert names == {
      "add_att",
      "add_obj",
      "replace_att",
      "replace_obj",
      "replace_rel",
      "swap_att",
      "swap_obj",
  }


def test_sugar_crepe_real_rows(tmp_path):
  if not REAL_SUGAR_CREPE.is_dir():
    pytest.skip(f"no SugarCrepe files under {REAL_SUGAR_CREPE}")
  real = json.loads((REAL_SUGAR_CREPE / "swap_obj.json").read_text())
  keys = list(real)[-3:]  # Includes the id after swap_obj's gap.
  manual_dir = tmp_path / "manual"
  write_sugar_crepe(manual_dir, {k: real[k] for k in keys}, "swap_obj")
  builder = build("sugar_crepe", "swap_obj", manual_dir, tmp_path)
  examples = {e["id"]: e for e in read_split(builder, "test")}
  assert sorted(examples) == sorted(int(k) for k in keys)
  for key in keys:
    assert as_text(examples[int(key)]["caption"]) == real[key]["caption"]
    assert (
        as_text(examples[int(key)]["hard_negative"])
        == real[key]["negative_caption"]
    )


# ----------------------------------------------------- coco_hard_pos_neg ---

COCO_ANNOTATIONS = [
    # (caption id, image id, caption, HNs, swap HP, replace HP)
    (
        48,
        9,
        "a dog and a cat",
        ["a cat and a dog on"],
        "a cat and a dog",
        "a hound and a cat",
    ),
    (67, 9, "a dog on a sofa", [], "None", "a dog on a couch"),
    (
        126,
        25,
        "two men and a boat",
        ["two boats and a man", "no men"],
        "a boat and two men",
        "None",
    ),
    (7, 30, "a red bus", [], "None", "None"),
]


def write_coco(manual_dir, annotations=COCO_ANNOTATIONS):
  images = {9: RED, 25: GREEN, 30: BLUE}
  write_json(
      manual_dir / layout.CAPTIONS_FILE,
      {
          "images": [{"id": i, "file_name": f"{i:012d}.jpg"} for i in images],
          "annotations": [
              {"id": cid, "image_id": iid, "caption": c}
              for cid, iid, c, *_ in annotations
          ],
      },
  )
  for image_id, color in images.items():
    write_image(manual_dir / "train2017" / f"{image_id:012d}.jpg", color)
  write_lines(
      manual_dir / layout.HARD_NEGATIVE_FILE,
      [a[3] for a in annotations],
  )
  for kind, column in (("swap", 4), ("replace", 5)):
    write_lines(
        manual_dir / layout.HARD_POSITIVE_FILES[kind],
        [a[column] for a in annotations],
    )


def captions_of(example):
  """A stored example's captions as plain dicts of their own features."""
  return [
      {k: (int(v) if k == "caption_id" else
           [int(r) for r in v] if k == "neg_images" else
           as_text(v) if k == "caption" else [as_text(t) for t in v])
       for k, v in row.items() if k in records.CAPTION_KEYS}
      for row in records.caption_rows([example])
  ]


def test_coco(tmp_path):
  manual_dir = tmp_path / "manual"
  write_coco(manual_dir)
  builder = build("coco_hard_pos_neg", "coco", manual_dir, tmp_path)
  assert list(builder.info.splits) == ["train"]
  examples = read_split(builder, "train")
  # One example per image, in the order of `images`, captions in file order.
  assert [as_text(e["image_id"]) for e in examples] == ["9", "25", "30"]
  assert builder.info.metadata["caption_ids"]["train"] == [[48, 67], [126], [7]]
  captions = {c["caption_id"]: c for e in examples for c in captions_of(e)}
  for cid, _, caption, hns, swap_hp, replace_hp in COCO_ANNOTATIONS:
    expected = [
        (hp, kind)
        for hp, kind in ((swap_hp, "swap"), (replace_hp, "replace"))
        if hp != "None"
    ]
    assert captions[cid] == {
        "caption": caption,
        "caption_id": cid,
        "hard_negatives": hns,
        "hard_positives": [hp for hp, _ in expected],
        "hard_positive_kinds": [kind for _, kind in expected],
        "neg_images": [],
    }
  np.testing.assert_allclose(
      examples[1]["image"].astype(float).mean(axis=(0, 1)), GREEN, atol=6
  )
  # Images smaller than the config's side are stored byte for byte.
  source = builder.as_data_source(
      "train", decoders={"image": tfds.decode.SkipDecoding()})
  assert source[0]["image"] == (
      manual_dir / "train2017" / "000000000009.jpg").read_bytes()


def test_coco_n_images_of_five_captions(tmp_path):
  n = 4
  annotations = [
      (100 * i + j, i, f"caption {j} of image {i}", [f"hn {i}.{j}"], "None",
       "None")
      for i in range(n) for j in range(5)
  ]
  manual_dir = tmp_path / "manual"
  write_json(
      manual_dir / layout.CAPTIONS_FILE,
      {
          "images": [{"id": i, "file_name": f"{i}.jpg"} for i in range(n)],
          "annotations": [
              {"id": c, "image_id": i, "caption": t}
              for c, i, t, *_ in annotations
          ],
      },
  )
  for i in range(n):
    write_image(manual_dir / "train2017" / f"{i}.jpg", (10 * i, 0, 0))
  write_lines(manual_dir / layout.HARD_NEGATIVE_FILE,
              [a[3] for a in annotations])
  for kind in ("swap", "replace"):
    write_lines(manual_dir / layout.HARD_POSITIVE_FILES[kind],
                ["None"] * len(annotations))
  builder = build("coco_hard_pos_neg", "coco", manual_dir, tmp_path)
  examples = read_split(builder, "train")
  assert len(examples) == n
  captions = [c for e in examples for c in captions_of(e)]
  assert len(captions) == 5 * n
  assert [(c["caption_id"], c["caption"], c["hard_negatives"])
          for c in captions] == [(a[0], a[2], a[3]) for a in annotations]


@pytest.mark.parametrize("config, size", [("coco", (384, 256)),
                                          ("coco_384", (576, 384)),
                                          ("coco_original", (600, 400))])
def test_coco_resizes_at_build_time(tmp_path, config, size):
  manual_dir = tmp_path / "manual"
  write_coco(manual_dir)
  big = write_image(manual_dir / "train2017" / "000000000025.jpg", GREEN,
                    size=(600, 400))
  builder = build("coco_hard_pos_neg", config, manual_dir, tmp_path)
  source = builder.as_data_source(
      "train", decoders={"image": tfds.decode.SkipDecoding()})
  data = source[1]["image"]
  with Image.open(io.BytesIO(data)) as image:
    assert (image.format, image.size) == ("JPEG", size)
    np.testing.assert_allclose(
        np.asarray(image, float).mean(axis=(0, 1)), GREEN, atol=6)
  if config == "coco_original":
    assert data == big.read_bytes()


def test_coco_image_without_captions(tmp_path):
  manual_dir = tmp_path / "manual"
  write_coco(manual_dir, COCO_ANNOTATIONS[:3])
  assert_build_fails(
      "coco_hard_pos_neg",
      "coco",
      manual_dir,
      tmp_path,
      "captions_train2017.json, images[2] (id 30)",
      "has no caption",
  )


def test_coco_line_count_mismatch(tmp_path):
  manual_dir = tmp_path / "manual"
  write_coco(manual_dir)
  hp_file = manual_dir / layout.HARD_POSITIVE_FILES["replace"]
  write_lines(hp_file, ["None"] * 3)
  assert_build_fails(
      "coco_hard_pos_neg",
      "coco",
      manual_dir,
      tmp_path,
      f"{hp_file} has 3 lines",
      "captions_train2017.json has 4 annotations",
  )


NEGCLIP_HEADER = "\ttitle\tfilepath\tneg_caption\tneg_image\n"
# Rows as pandas.to_csv(sep="\t") writes them: a field with a double quote or
# a newline is quoted, with quotes doubled.
_VAL = "coco/val2014/COCO_val2014_"
NEGCLIP_ROWS = (
    f"0\tA child holding an umbrella.\t{_VAL}000000184613.jpg"
    "\t['A umbrella holding a child .', 'A child umbrella holding .']\t[2, 1]\n"
    f"1\tA truck on it's flatbed.\t{_VAL}000000551952.jpg"
    '\t"[""A flatbed on it \'s truck .""]"\t[0, 2]\n'
    f'2\t"A sign that says ""Stop""\nhere."\t{_VAL}000000184613.jpg'
    "\t[]\t[0, 1]\n"
)
NEGCLIP_NEG_IMAGES = [[2, 1], [0, 2], [0, 1]]
NEGCLIP_EXPECTED = [
    (
        "A child holding an umbrella.",
        ["A umbrella holding a child .", "A child umbrella holding ."],
    ),
    ("A truck on it's flatbed.", ["A flatbed on it 's truck ."]),
    ('A sign that says "Stop"\nhere.', []),
]


def write_negclip(manual_dir, tsv_name="valid_neg_clip.tsv", rows=NEGCLIP_ROWS):
  manual_dir.mkdir(parents=True, exist_ok=True)
  (manual_dir / tsv_name).write_text(NEGCLIP_HEADER + rows)
  for name in ("000000184613", "000000551952"):
    folder = "val2014" if "valid" in tsv_name else "train2014"
    write_image(manual_dir / f"coco/{folder}/COCO_{folder}_{name}.jpg")


def test_negclip(tmp_path):
  manual_dir = tmp_path / "manual"
  write_negclip(manual_dir)
  builder = build("coco_hard_pos_neg", "negclip", manual_dir, tmp_path)
  # Only the TSVs that are present become splits.
  assert list(builder.info.splits) == ["validation"]
  examples = read_split(builder, "validation")
  # Rows 0 and 2 show one image: one example, its captions in row order.
  assert [as_text(e["image_id"]) for e in examples] == [
      f"{_VAL}000000184613.jpg", f"{_VAL}000000551952.jpg"]
  assert builder.info.metadata["caption_ids"]["validation"] == [[0, 2], [1]]
  captions = {c["caption_id"]: c for e in examples for c in captions_of(e)}
  for row, (title, negatives) in enumerate(NEGCLIP_EXPECTED):
    assert captions[row] == {
        "caption": title,
        "caption_id": row,
        "hard_negatives": negatives,
        "hard_positives": [],
        "hard_positive_kinds": [],
        "neg_images": NEGCLIP_NEG_IMAGES[row],
    }


def test_negclip_neg_image_out_of_range(tmp_path):
  manual_dir = tmp_path / "manual"
  write_negclip(manual_dir, rows=NEGCLIP_ROWS.replace("[0, 2]", "[0, 3]"))
  assert_build_fails(
      "coco_hard_pos_neg",
      "negclip",
      manual_dir,
      tmp_path,
      "valid_neg_clip.tsv, row 1 (line 3)",
      "neg_image 3 is out of range",
  )


def test_negclip_neg_image_of_a_skipped_row(tmp_path):
  manual_dir = tmp_path / "manual"
  write_negclip(manual_dir)
  (manual_dir / f"{_VAL}000000551952.jpg").write_bytes(b"")
  with pytest.raises(common.DataError) as info:
    build("coco_hard_pos_neg", "negclip", manual_dir, tmp_path,
          skip_bad_examples=True)
  for needle in ("row 0 (line 2)", "neg_image 1 points at a skipped row",
                 "0 bytes"):
    assert needle in str(info.value)
  assert not make_builder("coco_hard_pos_neg", "negclip", tmp_path).is_prepared()


def test_negclip_both_splits(tmp_path):
  manual_dir = tmp_path / "manual"
  write_negclip(manual_dir)
  write_negclip(
      manual_dir,
      "train_neg_clip.tsv",
      NEGCLIP_ROWS.replace("val2014", "train2014"),
  )
  builder = build("coco_hard_pos_neg", "negclip", manual_dir, tmp_path)
  assert sorted(builder.info.splits) == ["train", "validation"]
  assert builder.info.splits["train"].num_examples == 2  # images


def test_negclip_no_tsv(tmp_path):
  manual_dir = tmp_path / "manual"
  write_image(manual_dir / "coco/val2014/x.jpg")
  assert_build_fails(
      "coco_hard_pos_neg",
      "negclip",
      manual_dir,
      tmp_path,
      "train_neg_clip.tsv",
      "valid_neg_clip.tsv",
  )


@pytest.mark.parametrize(
    "cell, expected",
    [
        ("['a b .', \"c 'd\"]", ["a b .", "c 'd"]),
        ("[]", []),
    ],
)
def test_parse_negclip_list(cell, expected):
  assert coco_hard_pos_neg.parse_negclip_list(cell) == expected


@pytest.mark.parametrize(
    "cell",
    [
        "__import__('os').getcwd()",
        "['a', 'b'",
        "'a'",
        "[1, 2]",
        "['a', '']",
        "",
    ],
)
def test_parse_negclip_list_rejects(cell):
  with pytest.raises(common.DataError, match="neg_caption"):
    coco_hard_pos_neg.parse_negclip_list(cell)


def test_negclip_real_tsv(tmp_path):
  if not REAL_NEGCLIP_TSV.is_file():
    pytest.skip(f"no {REAL_NEGCLIP_TSV}")
  header, rows = coco_hard_pos_neg.read_negclip_tsv(REAL_NEGCLIP_TSV)
  assert header == ["", "title", "filepath", "neg_caption", "neg_image"]
  assert len(rows) == 4839
  for _, values in rows:
    assert len(values) == len(header)
    negatives = coco_hard_pos_neg.parse_negclip_list(values[3])
    assert negatives and all(isinstance(n, str) for n in negatives)
  # Every neg_image names rows of the file: NegCLIP's 3 neighbours.
  tsv = coco_hard_pos_neg._read_negclip(REAL_NEGCLIP_TSV)
  assert all(len(coco_hard_pos_neg._neg_images(tsv, r)) == 3
             for r in range(len(rows)))
  # Build a few rows, some with quotes, with stand-in images; their
  # neg_image cells name rows of the full file, so they point at row 0 here.
  lines = REAL_NEGCLIP_TSV.read_text().splitlines(keepends=True)
  picks = [0, 48, 776]
  manual_dir = tmp_path / "manual"
  manual_dir.mkdir()
  (manual_dir / "valid_neg_clip.tsv").write_text(
      lines[0] + "".join(lines[1 + i].rsplit("\t", 1)[0] + "\t[0]\n"
                         for i in picks)
  )
  for i in picks:
    write_image(manual_dir / rows[i][1][2])
  builder = build("coco_hard_pos_neg", "negclip", manual_dir, tmp_path)
  captions = {c["caption_id"]: c for e in read_split(builder, "validation")
              for c in captions_of(e)}
  for position, i in enumerate(picks):
    values = rows[i][1]
    assert captions[position]["caption"] == values[1]
    assert captions[position]["hard_negatives"] == (
        coco_hard_pos_neg.parse_negclip_list(values[3])
    )


# ------------------------------------------------------------- bad input ---


def _break_image(kind):
  def apply(manual_dir):
    path = manual_dir / "data/VG_100K/77.jpg"
    if kind == "missing":
      path.unlink()
    elif kind == "garbage":
      path.write_bytes(b"this is not a jpeg" * 10)
    elif kind == "empty":
      path.write_bytes(b"")
    elif kind == "truncated":
      path.write_bytes(path.read_bytes()[:200])

  return apply


def _edit_rows(edit):
  def apply(manual_dir):
    data, swapped = replace_rows()
    edit(data, swapped)
    write_replace(manual_dir, data, swapped)

  return apply


def _malformed_json(manual_dir):
  path = manual_dir / "data/vl_checklist_attributes.json"
  path.write_text(path.read_text()[:-40])


def _missing_swapped_file(manual_dir):
  (manual_dir / "swapped_data/vl_checklist_attributes.json").unlink()


def _set(rows, index, key, value):
  rows[index][key] = value


@pytest.mark.parametrize(
    "breakage, needles",
    [
        (_break_image("missing"), ["row 2", "77.jpg", "does not exist"]),
        (
            _break_image("garbage"),
            ["row 2", "77.jpg", "no format PIL can read"],
        ),
        (_break_image("empty"), ["row 2", "77.jpg", "0 bytes"]),
        (
            _break_image("truncated"),
            ["row 2", "77.jpg", "not a readable image"],
        ),
        (
            _edit_rows(lambda d, s: _set(d, 1, "true_caption", " ")),
            ["row 1", "true_caption", "empty"],
        ),
        (
            _edit_rows(lambda d, s: _set(s, 3, "true_caption", "")),
            ["swapped_data/vl_checklist_attributes.json row 3", "empty"],
        ),
        (
            _edit_rows(lambda d, s: d[0].pop("true_caption")),
            ["row 0", "missing key 'true_caption'"],
        ),
        (
            _edit_rows(lambda d, s: d.__setitem__(0, [1, 2])),
            ["row 0", "not a JSON object"],
        ),
        (
            _malformed_json,
            ["data/vl_checklist_attributes.json", "malformed JSON at line 1"],
        ),
        (
            _missing_swapped_file,
            ["swapped_data/vl_checklist_attributes.json is missing"],
        ),
    ],
    ids=[
        "missing_image",
        "garbage_image",
        "empty_image",
        "truncated_image",
        "empty_caption",
        "empty_hard_positive",
        "missing_key",
        "row_not_object",
        "malformed_json",
        "missing_file",
    ],
)
def test_hard_positives_bad_input(replace_dir, tmp_path, breakage, needles):
  breakage(replace_dir)
  message = assert_build_fails(
      "hard_positives", "replace_att", replace_dir, tmp_path, *needles
  )
  assert "vl_checklist_attributes.json" in message


def _swap_dir(manual_dir, box):
  write_image(manual_dir / "images/1.jpg", size=(40, 30))
  row = {
      "image_path": "1.jpg",
      "bbox_x": box[0],
      "bbox_y": box[1],
      "bbox_w": box[2],
      "bbox_h": box[3],
      "true_caption": "a and b",
      "false_caption": "b and a",
  }
  write_json(manual_dir / "data/visual_genome_attribution.json", [row])
  write_json(
      manual_dir / "swapped_data/visual_genome_attribution.json",
      [{**row, "true_caption": "b and a"}],
  )


@pytest.mark.parametrize(
    "box", [(30, 5, 20, 10), (-3, 0, 10, 10), (5, 5, 0, 10)]
)
def test_swap_bbox_outside_image(tmp_path, box):
  manual_dir = tmp_path / "manual"
  _swap_dir(manual_dir, box)
  assert_build_fails(
      "hard_positives",
      "swap",
      manual_dir,
      tmp_path,
      "visual_genome_attribution.json, row 0",
      "40x30",
      "1.jpg",
  )


def test_swap_bbox_not_a_number(tmp_path):
  manual_dir = tmp_path / "manual"
  _swap_dir(manual_dir, (1, 2, "10", 10))
  assert_build_fails(
      "hard_positives", "swap", manual_dir, tmp_path, "row 0", "bbox_w"
  )


def test_image_path_must_stay_in_manual_dir(replace_dir, tmp_path):
  data, swapped = replace_rows()
  for rows in (data, swapped):
    rows[1]["image_path"] = "../../etc/passwd"
  write_replace(replace_dir, data, swapped)
  assert_build_fails(
      "hard_positives",
      "replace_att",
      replace_dir,
      tmp_path,
      "row 1",
      "must be relative",
  )


def test_sugar_crepe_bad_input(tmp_path):
  manual_dir = tmp_path / "manual"
  items = {**SUGAR_ITEMS, "5": {"filename": "000000000005.jpg", "caption": "x"}}
  write_sugar_crepe(manual_dir, items)
  assert_build_fails(
      "sugar_crepe",
      "add_att",
      manual_dir,
      tmp_path,
      "data/add_att.json, key '5'",
      "negative_caption",
  )


def test_sugar_crepe_missing_file(tmp_path):
  manual_dir = tmp_path / "manual"
  write_sugar_crepe(manual_dir, SUGAR_ITEMS)
  assert_build_fails(
      "sugar_crepe",
      "swap_obj",
      manual_dir,
      tmp_path,
      "data/swap_obj.json is missing",
  )


@pytest.mark.parametrize(
    "line, needles",
    [
        ('["ok", ', ["line 2", "malformed JSON"]),
        ('"not a list"', ["line 2", "not a JSON list"]),
        ('["fine", ""]', ["line 2", "empty"]),
    ],
)
def test_coco_bad_hard_negative_line(tmp_path, line, needles):
  manual_dir = tmp_path / "manual"
  write_coco(manual_dir)
  hn_file = manual_dir / layout.HARD_NEGATIVE_FILE
  lines = hn_file.read_text().splitlines()
  lines[1] = line
  hn_file.write_text("\n".join(lines) + "\n")
  assert_build_fails(
      "coco_hard_pos_neg",
      "coco",
      manual_dir,
      tmp_path,
      "captions_train2017.json, images[0] (id 9): annotations[1]",
      hn_file,
      *needles,
  )


@pytest.mark.parametrize(
    "bad, needles",
    [
        (
            (126, 25, "", [], "None", "None"),
            ["images[1] (id 25): annotations[4]", "caption is empty"],
        ),
        (
            (1, 99, "a cat", [], "None", "None"),
            ["annotations[4]", "image_id 99 is not in 'images'"],
        ),
        (
            (1, 9, "a cat", [], None, "None"),
            ["images[0] (id 9): annotations[4]",
             "swap_hp.jsonl, line 5 is None, not a string"],
        ),
    ],
    ids=["empty_caption", "unknown_image", "null_hard_positive"],
)
def test_coco_bad_annotation(tmp_path, bad, needles):
  manual_dir = tmp_path / "manual"
  write_coco(manual_dir, COCO_ANNOTATIONS + [bad])
  assert_build_fails(
      "coco_hard_pos_neg",
      "coco",
      manual_dir,
      tmp_path,
      "captions_train2017.json",
      *needles,
  )


@pytest.mark.parametrize(
    "name",
    [
        layout.CAPTIONS_FILE,
        layout.HARD_NEGATIVE_FILE,
        layout.HARD_POSITIVE_FILES["swap"],
    ],
)
def test_coco_missing_file(tmp_path, name):
  manual_dir = tmp_path / "manual"
  write_coco(manual_dir)
  (manual_dir / name).unlink()
  assert_build_fails(
      "coco_hard_pos_neg", "coco", manual_dir, tmp_path, f"{name} is missing"
  )


def test_negclip_bad_row(tmp_path):
  manual_dir = tmp_path / "manual"
  rows = (
      NEGCLIP_ROWS
      + "3\ta cat\tcoco/val2014/COCO_val2014_000000184613.jpg\t['x'\t[]\n"
  )
  write_negclip(manual_dir, rows=rows)
  assert_build_fails(
      "coco_hard_pos_neg",
      "negclip",
      manual_dir,
      tmp_path,
      "valid_neg_clip.tsv, rows [0, 2, 3]",
      "row 3 (line 6): neg_caption is not a Python list literal",
  )


# --------------------------------------------------------------- skipping ---


def test_skip_bad_examples(replace_dir, tmp_path):
  clean = build("hard_positives", "replace_att", replace_dir, tmp_path / "a")
  clean_order = [e["index"] for e in read_split(clean, "test")]

  (replace_dir / "data/VG_100K/77.jpg").write_bytes(b"")
  skipping = build(
      "hard_positives",
      "replace_att",
      replace_dir,
      tmp_path / "b",
      skip_bad_examples=True,
  )
  order = [e["index"] for e in read_split(skipping, "test")]
  # Skipping one example leaves the others in the same order.
  assert order == [i for i in clean_order if i != 2]
  # The count survives a reload from disk.
  reloaded = make_builder("hard_positives", "replace_att", tmp_path / "b")
  skipped = reloaded.info.metadata["skipped"]["test"]
  assert skipped["count"] == 1
  assert "row 2" in skipped["reasons"][0] and "0 bytes" in skipped["reasons"][0]


def test_skip_does_not_cover_whole_files(replace_dir, tmp_path):
  data, swapped = replace_rows()
  write_replace(replace_dir, data, swapped[:2])
  with pytest.raises(common.DataError, match="has 4 rows"):
    build(
        "hard_positives",
        "replace_att",
        replace_dir,
        tmp_path,
        skip_bad_examples=True,
    )


# ---------------------------------------------------------------- common ---


def test_read_image_keeps_rgb_jpeg_and_converts_the_rest(tmp_path):
  jpeg = write_image(tmp_path / "a.jpg")
  assert common.read_image(jpeg) == jpeg.read_bytes()
  for mode, fmt in (("L", "JPEG"), ("CMYK", "JPEG"), ("RGBA", "PNG")):
    path = write_image(tmp_path / f"b_{mode}.img", mode=mode, fmt=fmt)
    with Image.open(io.BytesIO(common.read_image(path))) as image:
      assert (image.format, image.mode) == ("JPEG", "RGB")


def test_registered():
  assert registered  # Importing it registers the builders.
  for name in ("hard_positives", "sugar_crepe", "coco_hard_pos_neg", "aro",
               "sugar_crepe_pp", "winoground", "vl_checklist"):
    assert name in tfds.list_builders()
