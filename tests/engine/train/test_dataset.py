"""Reading the authors' dataset layout: PNG/JPG/GeoTIFF tiles, labels, and bad datasets."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from engine.errors import UserError
from engine.train.dataset import ChangeDataset, label_warning, read_label, scan_split
from tests.engine.train.tiny_dataset import make_dataset
from tests.rasters import write_geotiff

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def test_levir_sample_reads_as_normalised_tensors(shared_dir):
    root = shared_dir / "data" / "levir_sample"
    samples = scan_split(root, "test")  # the list names the tile with its extension
    assert [s.size for s in samples] == [(512, 512)]
    x, y, i = ChangeDataset(samples)[0]
    assert i == 0 and x.shape == (6, 512, 512) and x.dtype == torch.float32
    assert y.shape == (1, 512, 512) and set(torch.unique(y).tolist()) <= {0.0, 1.0}
    a = np.array(Image.open(samples[0].before).convert("RGB"))
    b = np.array(Image.open(samples[0].after).convert("RGB"))
    lab = np.asarray(Image.open(samples[0].label))
    expect_a = (torch.from_numpy(a).permute(2, 0, 1).float() / 255 - MEAN) / STD
    expect_b = (torch.from_numpy(b).permute(2, 0, 1).float() / 255 - MEAN) / STD
    torch.testing.assert_close(x[:3], expect_a)  # before = channels 0-2
    torch.testing.assert_close(x[3:], expect_b)
    assert y.sum().item() == np.count_nonzero(lab) > 0
    assert label_warning(samples) is None  # a clean 0/255 label


@pytest.mark.parametrize("fmt", ["png", "jpg", "tif"])
def test_tiles_of_each_format_read_alike(tmp_path, fmt):
    root = make_dataset(tmp_path / fmt, {"train": 2}, size=64, fmt=fmt)
    samples = scan_split(root, "train")
    assert [s.name for s in samples] == ["t00", "t01"]
    assert all(s.before.suffix == f".{fmt}" for s in samples)
    x, y, _ = ChangeDataset(samples)[1]
    assert x.shape == (6, 64, 64) and y.shape == (1, 64, 64)
    assert y.sum().item() == 16 * 16  # the new square


def test_names_listed_with_or_without_extension(tmp_path):
    root = make_dataset(tmp_path, {"test": 2}, with_ext=True)
    assert [s.before.name for s in scan_split(root, "test")] == ["t00.png", "t01.png"]


def test_any_nonzero_label_is_change_with_one_warning(tmp_path):
    root = make_dataset(tmp_path, {"train": 3})
    odd = np.zeros((64, 64), np.uint8)
    odd[:8, :8] = 1
    odd[8:16, :8] = 128
    Image.fromarray(odd).save(root / "train" / "label" / "t01.png")
    Image.fromarray(odd).save(root / "train" / "label" / "t02.png")
    mask, flagged = read_label(root / "train" / "label" / "t01.png")
    assert flagged and mask.sum() == 128 and set(np.unique(mask)) == {0, 1}
    warning = label_warning(scan_split(root, "train"))
    assert warning.count("\n") == 0
    assert "t01.png" in warning and "2 of 3" in warning and "non-zero" in warning


def _error(root, split) -> str:
    with pytest.raises(UserError) as info:
        scan_split(root, split)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_split_and_list_file(tmp_path):
    root = make_dataset(tmp_path, {"train": 1})
    assert "split 'val' not found" in _error(root, "val") and "train" in _error(root, "val")
    (root / "train" / "list" / "train.txt").unlink()
    assert "train.txt: list file not found" in _error(root, "train")


def test_listed_name_without_image(tmp_path):
    root = make_dataset(tmp_path, {"train": 2})
    (root / "train" / "B" / "t01.png").unlink()
    message = _error(root, "train")
    assert message.startswith(str(root / "train" / "B" / "t01")) and "no such image" in message


def test_tiles_of_different_sizes(tmp_path):
    root = make_dataset(tmp_path, {"train": 2})
    Image.fromarray(np.zeros((60, 64), np.uint8)).save(root / "train" / "label" / "t00.png")
    message = _error(root, "train")
    assert message.startswith(str(root / "train" / "label" / "t00.png")) and "64x60" in message and "same size" in message


def test_empty_dataset(tmp_path):
    root = make_dataset(tmp_path, {"train": 1})
    (root / "train" / "list" / "train.txt").write_text("\n\n")
    assert "empty dataset" in _error(root, "train")


def test_not_8bit_or_not_an_image(tmp_path):
    root = make_dataset(tmp_path, {"train": 1}, fmt="tif")
    write_geotiff(root / "train" / "A" / "t00.tif", np.zeros((3, 64, 64), np.uint16))
    with pytest.raises(UserError, match=r"t00\.tif: uint16 pixels, expected 8-bit"):
        ChangeDataset(scan_split(root, "train"))[0]
    (root / "train" / "B" / "t00.tif").write_bytes(b"not a tiff")
    assert "B/t00.tif: not an image" in _error(root, "train")
