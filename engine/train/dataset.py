"""The authors' dataset layout: ``{split}/{A,B,label}/NAME.ext`` + ``{split}/list/{split}.txt``.

``A`` holds the before images, ``B`` the after images, ``label`` the change masks; the
list file names one tile a line (with or without its extension). Tiles may be PNG, JPG
or (Geo)TIFF; images are 8-bit RGB (the first three bands of a TIFF), labels one band
where any non-zero value is change.

Partial labels: an optional ``{split}/labelled/NAME.ext`` (one band, the tile's size) says
which pixels were labelled: non-zero = labelled, 0 = not labelled (``prepare
--labelled-area`` writes 255/0). When the folder exists every listed tile needs one;
training, validation and ``evaluate`` then ignore the pixels that are not labelled. The
label files keep the authors' 0/255 convention (0 where not labelled), so tools that do
not know the mask still read them.

:func:`scan_split` checks the whole split up front (every name resolves, A/B/label have
the same size) so a bad dataset fails in one clear line before training starts;
:class:`ChangeDataset` then reads samples as normalised tensors for the model.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from ..checkpoint import IMAGENET_MEAN, IMAGENET_STD
from ..errors import UserError
from .areas import LABELLED

__all__ = [
    "IMAGE_EXTS",
    "Sample",
    "Normalisation",
    "TileError",
    "ChangeDataset",
    "scan_split",
    "label_warning",
    "read_rgb",
    "read_label",
    "read_labelled",
    "split_target",
    "LABELLED",
    "normalise",
]

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
TIFF_EXTS = (".tif", ".tiff")
FOLDERS = ("A", "B", "label")


@dataclass(frozen=True)
class Sample:
    """One tile of a split.

    Attributes:
        name: the name as written in the list file.
        before, after, label: image paths (``A``, ``B``, ``label`` folders).
        size: (rows, cols) in pixels, the same for all three.
        labelled: the mask of labelled pixels (``labelled`` folder), None: all labelled.
    """

    name: str
    before: Path
    after: Path
    label: Path
    size: tuple[int, int]
    labelled: Optional[Path] = None


@dataclass(frozen=True)
class Normalisation:
    """Per-channel scaling of one date's RGB: ``(raw * scale - mean) / std``."""

    scale: float = 1 / 255.0
    mean: tuple[float, float, float] = tuple(IMAGENET_MEAN)  # type: ignore[assignment]
    std: tuple[float, float, float] = tuple(IMAGENET_STD)  # type: ignore[assignment]

    @classmethod
    def from_scaling(cls, scaling: dict) -> "Normalisation":
        """From a checkpoint's ``ModelInfo.scaling`` (per-band scale, mean, std)."""
        scale = scaling.get("scale", [1 / 255.0])
        scale = scale[0] if isinstance(scale, (list, tuple)) else scale

        def three(values) -> tuple:  # one value stands for all three bands
            values = tuple(values) if isinstance(values, (list, tuple)) else (values,)
            return values * 3 if len(values) == 1 else values

        return cls(float(scale), three(scaling.get("mean", IMAGENET_MEAN)), three(scaling.get("std", IMAGENET_STD)))


# --------------------------------------------------------------------------- reading


class TileError(UserError):
    """A tile that cannot be used, raised while a sample is read.

    It stays one line through DataLoader worker processes: torch re-raises a worker's
    exception in the main process as ``type(exc)(traceback text)``, and this class
    keeps only the original message (the traceback's last line).
    """

    def __init__(self, message: str) -> None:
        if "\nOriginal Traceback" in message:
            last = message.rstrip().splitlines()[-1]
            message = last.split(": ", 1)[1] if ": " in last else last
        super().__init__(message)



def _image_size(path: Path) -> tuple[int, int]:
    """(rows, cols) from the file header only."""
    try:
        if path.suffix.lower() in TIFF_EXTS:
            with _open_tiff(path) as src:
                return src.height, src.width
        from PIL import Image

        with Image.open(path) as im:
            return im.height, im.width
    except Exception as exc:  # any reader failure is a bad file
        raise UserError(f"{path}: not an image that can be read ({_short(exc)})") from exc


def _open_tiff(path: Path):
    """``rasterio.open(path)`` without rasterio's NotGeoreferencedWarning: dataset tiles need
    no georeference (``prepare`` writes none for inputs without one, and says so once)."""
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return rasterio.open(path)


def _short(exc: BaseException) -> str:
    from ..raster.read_errors import gdal_message

    return gdal_message(exc)[:160]  # GDAL's specific line, not rasterio's "see previous exception"


def _read_array(path: Path, rgb: bool) -> np.ndarray:
    """The raw pixels: (rows, cols) or (rows, cols, bands).

    With ``rgb``, PIL images in palette/grey/alpha modes are converted to RGB; without
    it they are returned as stored (palette indices for a palette label).
    """
    try:
        if path.suffix.lower() in TIFF_EXTS:
            from ..raster.read_errors import reading

            with _open_tiff(path) as src, reading(path):
                arr = src.read()
            return arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)
        from PIL import Image

        with Image.open(path) as im:
            if im.mode in ("I", "F") or im.mode.startswith("I;16"):
                raise UserError(f"{path}: {im.mode} pixels, expected 8-bit images")
            if rgb and im.mode != "RGB":
                im = im.convert("RGB")
            arr = np.asarray(im)
        return arr.astype(np.uint8) * 255 if arr.dtype == bool else arr
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"{path}: not an image that can be read ({_short(exc)})") from exc


def read_rgb(path: Union[str, Path]) -> np.ndarray:
    """An 8-bit RGB image as (rows, cols, 3) uint8 (first three bands of a TIFF; grey repeated)."""
    path = Path(path)
    arr = _read_array(path, rgb=True)
    if arr.dtype != np.uint8:
        raise UserError(f"{path}: {arr.dtype} pixels, expected 8-bit RGB (uint8)")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.shape[2] < 3:
        raise UserError(f"{path}: {arr.shape[2]} bands, expected RGB (3 bands)")
    return np.ascontiguousarray(arr[:, :, :3])


def read_label(path: Union[str, Path]) -> tuple[np.ndarray, bool]:
    """A change mask as (rows, cols) uint8 in {0, 1} (any non-zero value is change).

    Returns the mask and whether the file held values other than 0 and 255.
    """
    path = Path(path)
    arr = _read_array(path, rgb=False)
    if arr.ndim == 3:
        arr = arr.max(axis=2)  # an RGB label: change where any channel is set
    odd = bool(np.any((arr != 0) & (arr != 255)))
    return (arr != 0).astype(np.uint8), odd


def read_labelled(path: Union[str, Path]) -> np.ndarray:
    """A "labelled" mask as (rows, cols) uint8 in {0, 1}: 1 where labelled (any non-zero value)."""
    path = Path(path)
    arr = _read_array(path, rgb=False)
    if arr.ndim == 3:
        arr = arr.max(axis=2)
    return (arr != 0).astype(np.uint8)


# --------------------------------------------------------------------------- scanning


def _index_folder(folder: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """File name -> path and stem -> path (image extensions only) for one folder."""
    by_name: dict[str, Path] = {}
    by_stem: dict[str, Path] = {}
    with os.scandir(folder) as it:
        for entry in it:
            if not entry.is_file():
                continue
            p = Path(entry.path)
            by_name[entry.name] = p
            if p.suffix.lower() in IMAGE_EXTS:
                by_stem.setdefault(p.stem, p)
    return by_name, by_stem


def _resolve(name: str, index: tuple[dict[str, Path], dict[str, Path]]) -> Optional[Path]:
    by_name, by_stem = index
    if name in by_name:
        return by_name[name]
    stem = Path(name).stem if Path(name).suffix.lower() in IMAGE_EXTS else name
    return by_stem.get(name) or by_stem.get(stem)


def read_list(root: Union[str, Path], split: str) -> list[str]:
    """The names in ``root/split/list/split.txt`` (blank lines and ``#`` comments skipped)."""
    root = Path(root)
    split_dir = root / split
    if not root.is_dir():
        raise UserError(f"{root}: dataset folder not found")
    if not split_dir.is_dir():
        present = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise UserError(f"{split_dir}: split {split!r} not found (folders here: {', '.join(present) or 'none'})")
    list_file = split_dir / "list" / f"{split}.txt"
    if not list_file.is_file():
        raise UserError(f"{list_file}: list file not found (one tile name a line)")
    names = []
    for line in list_file.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            names.append(line)
    if not names:
        raise UserError(f"{list_file}: empty dataset (the list names no tiles)")
    return names


def scan_split(root: Union[str, Path], split: str) -> list[Sample]:
    """Check and list the tiles of one split.

    Raises :class:`UserError` naming the file for a missing split folder, list file or
    A/B/label folder, a listed name with no image, a file that cannot be read, or A, B
    and label of different sizes. With a ``labelled`` folder, each tile needs its mask.
    """
    root = Path(root)
    names = read_list(root, split)
    split_dir = root / split
    folders = FOLDERS + ((LABELLED,) if (split_dir / LABELLED).is_dir() else ())
    indexes = {}
    for folder in folders:
        d = split_dir / folder
        if not d.is_dir():
            raise UserError(f"{d}: folder not found (expected {split}/A, {split}/B and {split}/label)")
        indexes[folder] = _index_folder(d)
    samples = []
    for name in names:
        paths = []
        for folder in folders:
            p = _resolve(name, indexes[folder])
            if p is None:
                raise UserError(f"{split_dir / folder / name}: listed in {split}/list/{split}.txt but no such image")
            paths.append(p)
        sizes = [_image_size(p) for p in paths]
        for p, s in zip(paths[1:], sizes[1:]):
            if s != sizes[0]:
                raise UserError(
                    f"{p}: {s[1]}x{s[0]} pixels but {split}/A/{paths[0].name} is {sizes[0][1]}x{sizes[0][0]}"
                    " (A, B, label and labelled must have the same size)"
                )
        samples.append(Sample(name, paths[0], paths[1], paths[2], sizes[0], paths[3] if len(paths) > 3 else None))
    return samples


def label_warning(samples: Sequence[Sample]) -> Optional[str]:
    """One warning line if any label holds values other than 0 and 255, else None.

    Reads every label (small single-band files).
    """
    odd = [s for s in samples if read_label(s.label)[1]]
    if not odd:
        return None
    return (
        f"{odd[0].label}: label values other than 0 and 255 ({len(odd)} of {len(samples)} label files);"
        " any non-zero value is treated as change"
    )


# --------------------------------------------------------------------------- tensors


def split_target(y: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """A batch target (N, 1|2, H, W) -> (change (N, 1, H, W), labelled mask (N, 1, H, W) or None)."""
    if y.shape[1] > 1:
        return y[:, :1], y[:, 1:2]
    return y, None


def normalise(image: torch.Tensor, norm: Normalisation = Normalisation()) -> torch.Tensor:
    """(6, H, W) uint8 before|after RGB -> float32 normalised (``(raw*scale - mean)/std``)."""
    mean = torch.tensor(norm.mean * 2, dtype=torch.float32).view(6, 1, 1)
    std = torch.tensor(norm.std * 2, dtype=torch.float32).view(6, 1, 1)
    return (image.float() * norm.scale - mean) / std


Transform = Callable[[torch.Tensor, torch.Tensor, np.random.Generator], tuple[torch.Tensor, torch.Tensor]]


class ChangeDataset(Dataset):
    """Samples of one split as model inputs.

    ``dataset[i]`` or ``dataset[(i, seed)]`` returns ``(x, y, i)``: x float32 (6, H, W)
    normalised (before = channels 0-2, after = 3-5), y float32 (1, H, W) in {0, 1}, or
    (2, H, W) for a tile with a ``labelled`` mask: channel 0 the change, channel 1 the
    mask (1 = labelled; see :func:`split_target`).
    A ``transform(image uint8 (6,H,W), label uint8 (1,H,W), rng)`` (augmentation)
    runs before normalisation with a generator seeded by ``seed`` (deterministic,
    whatever the worker process), or seeded by ``i`` when no seed is given.
    """

    def __init__(self, samples: Sequence[Sample], transform: Optional[Transform] = None,
                 norm: Normalisation = Normalisation()) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.norm = norm

    def __len__(self) -> int:
        return len(self.samples)

    def read(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw tile i: image uint8 (6, H, W) and label uint8 (1, H, W) in {0, 1}, or (2, H, W)
        with the labelled mask as channel 1 (pixels not labelled: change 0, mask 0)."""
        s = self.samples[i]
        a, b = read_rgb(s.before), read_rgb(s.after)
        y, _ = read_label(s.label)
        layers = [(s.after, b), (s.label, y)]
        if s.labelled is not None:
            valid = read_labelled(s.labelled)
            layers.append((s.labelled, valid))
        for p, arr in layers:
            if arr.shape[:2] != a.shape[:2]:
                raise UserError(f"{p}: {arr.shape[1]}x{arr.shape[0]} pixels but {s.before} is {a.shape[1]}x{a.shape[0]}")
        image = torch.from_numpy(np.concatenate([a, b], axis=2)).permute(2, 0, 1).contiguous()
        if s.labelled is None:
            return image, torch.from_numpy(y)[None]
        return image, torch.from_numpy(np.stack([y * valid, valid]))

    def __getitem__(self, key: Union[int, tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor, int]:
        i, seed = (key, key) if isinstance(key, (int, np.integer)) else key
        try:
            image, label = self.read(int(i))
        except UserError as exc:
            raise TileError(str(exc)) from None
        if self.transform is not None:
            image, label = self.transform(image, label, np.random.default_rng(int(seed)))
        return normalise(image, self.norm), label.float(), int(i)
