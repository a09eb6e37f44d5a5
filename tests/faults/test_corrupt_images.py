"""Case 12 of issue 8: corrupt images in a builder's source files.

The hard_positives REPLACE builder is built from a manual_dir in the
released format whose images are: good RGB, truncated, garbage bytes, 0
bytes, CMYK and greyscale. Strict mode stops at the first bad one, naming
its file and row; skip mode drops exactly the three unreadable ones, counts
and names them, keeps the CMYK and greyscale ones as RGB, and builds the
same order twice.
"""

import io
import json

from PIL import Image
import pytest
import tensorflow_datasets as tfds

from tfds_builders import common
from tfds_builders import registered  # pylint: disable=unused-import

SOURCE = "vl_checklist_attributes.json"
# (image id, how its file is written); row i of the source uses image i.
IMAGES = [("10", "rgb"), ("11", "truncated"), ("12", "garbage"),
          ("13", "empty"), ("14", "cmyk"), ("15", "grey"), ("16", "rgb")]
BAD = {"truncated": "not a readable image", "garbage": "no format PIL",
       "empty": "0 bytes"}


def _jpeg(mode):
  out = io.BytesIO()
  Image.new("RGB", (40, 30), (200, 30, 40)).convert(mode).save(out, "JPEG")
  return out.getvalue()


def _write_manual_dir(root):
  data, swapped = [], []
  for i, (image_id, kind) in enumerate(IMAGES):
    path = root / "data" / "VG_100K" / f"{image_id}.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    content = {"rgb": _jpeg("RGB"), "cmyk": _jpeg("CMYK"), "grey": _jpeg("L"),
               "truncated": _jpeg("RGB")[:150], "garbage": b"\x00junk" * 40,
               "empty": b""}[kind]
    path.write_bytes(content)
    row = {"image_id": image_id, "image_path": f"data/VG_100K/{image_id}.jpg"}
    data.append({**row, "true_caption": f"red chair {i}",
                 "false_caption": f"blue chair {i}"})
    swapped.append({**row, "true_caption": f"crimson chair {i}",
                    "false_caption": f"blue chair {i}"})
  for folder, rows in (("data", data), ("swapped_data", swapped)):
    (root / folder).mkdir(parents=True, exist_ok=True)
    (root / folder / SOURCE).write_text(json.dumps(rows))


def _build(manual_dir, data_dir, **kwargs):
  builder = tfds.builder("hard_positives", config="replace_att",
                         data_dir=data_dir, **kwargs)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


@pytest.fixture
def manual_dir(tmp_path):
  root = tmp_path / "manual"
  _write_manual_dir(root)
  return root


def test_strict_mode_names_the_first_bad_example(manual_dir, tmp_path):
  with pytest.raises(common.DataError) as e:
    _build(manual_dir, tmp_path / "strict")
  message = str(e.value)
  assert SOURCE in message and "row 1" in message and "11.jpg" in message
  assert BAD["truncated"] in message
  assert not tfds.builder("hard_positives", config="replace_att",
                          data_dir=tmp_path / "strict").is_prepared()


def test_skip_mode_drops_counts_and_keeps_order(manual_dir, tmp_path):
  orders = []
  for run in ("a", "b"):
    builder = _build(manual_dir, tmp_path / run, skip_bad_examples=True)
    source = builder.as_data_source("test")
    examples = [source[i] for i in range(len(source))]
    orders.append([int(e["index"]) for e in examples])
    for e in examples:  # CMYK and greyscale arrive as 3-channel RGB.
      assert e["image"].shape[-1] == 3
  assert orders[0] == orders[1]
  assert sorted(orders[0]) == [0, 4, 5, 6]
  reloaded = tfds.builder("hard_positives", config="replace_att",
                          data_dir=tmp_path / "a")
  skipped = reloaded.info.metadata["skipped"]["test"]
  assert skipped["count"] == 3
  for row, (image_id, kind) in enumerate(IMAGES):
    if kind in BAD:
      (reason,) = [r for r in skipped["reasons"] if f"row {row}:" in r]
      assert f"{image_id}.jpg" in reason and BAD[kind] in reason
  print(f"FIGURES case 12: strict stops at row 1; skip mode kept "
        f"{len(orders[0])}/{len(IMAGES)}, counted {skipped['count']}, "
        "same order twice")
