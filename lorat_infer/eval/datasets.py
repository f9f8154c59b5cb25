"""Readers for LaSOT- and GOT-10k-style sequence folders, and a writer for synthetic sequences.

Layouts (one folder per sequence):

- LaSOT:    `<seq>/img/00000001.jpg ...`, `groundtruth.txt` (one `x,y,w,h` per line), optional
            `full_occlusion.txt` and `out_of_view.txt` (one line of comma-separated 0/1 flags).
- GOT-10k:  `<seq>/00000001.jpg ...`, `groundtruth.txt`, optional `absence.label` (one 0/1 per line).

Frames load lazily (one decode per access, PIL, RGB uint8) so a long sequence never sits in memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


class DatasetError(ValueError):
    """A sequence folder that does not match the expected layout; the message says what is wrong."""


def read_boxes(path: str | os.PathLike) -> np.ndarray:
    """(N, 4) float64 xywh from a text file with `x,y,w,h` per line (commas, tabs or spaces).

    `NaN` entries are kept (some annotations use them for absent targets) and are skipped by the metrics.
    """
    rows = []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        parts = line.replace(",", " ").replace("\t", " ").split()
        try:
            values = [float(p) for p in parts]
        except ValueError as exc:
            raise DatasetError(f"{path}:{lineno}: not numbers: {line!r}") from exc
        if len(values) != 4:
            raise DatasetError(f"{path}:{lineno}: expected 4 values x,y,w,h, got {len(values)}: {line!r}")
        rows.append(values)
    if not rows:
        raise DatasetError(f"{path}: no boxes")
    return np.asarray(rows, dtype=np.float64)


def write_boxes(path: str | os.PathLike, boxes: np.ndarray, precision: int = 4) -> None:
    """Write (N, 4) xywh boxes, one `x,y,w,h` line each."""
    lines = [",".join(f"{v:.{precision}f}" for v in row) for row in np.asarray(boxes, dtype=np.float64)]
    Path(path).write_text("\n".join(lines) + "\n")


def _read_flags(path: Path, n: int) -> np.ndarray:
    """0/1 flags separated by commas or newlines; must count `n`."""
    text = path.read_text().replace(",", " ").split()
    try:
        flags = np.array([int(float(t)) for t in text], dtype=bool)
    except ValueError as exc:
        raise DatasetError(f"{path}: flags must be 0/1") from exc
    if flags.shape != (n,):
        raise DatasetError(f"{path}: {flags.size} flags for {n} frames")
    return flags


def load_frame(path: str | os.PathLike) -> np.ndarray:
    """One image file as an HxWx3 uint8 RGB array."""
    with Image.open(path) as img:
        return np.array(img.convert("RGB"), dtype=np.uint8)  # a writable copy (torch.from_numpy needs one)


@dataclass
class SequenceFolder:
    """A sequence on disk: frame paths, ground truth and absence flags; frames decode on access."""

    name: str
    frame_paths: list[Path]
    boxes: np.ndarray  # (N, 4) xywh
    absent: np.ndarray  # (N,) bool: target fully occluded / out of view / absent

    def __len__(self) -> int:
        return len(self.frame_paths)

    def frame(self, index: int) -> np.ndarray:
        return load_frame(self.frame_paths[index])

    def __getitem__(self, index: int) -> np.ndarray:
        return self.frame(index)

    def frames(self) -> Iterator[np.ndarray]:
        for path in self.frame_paths:
            yield load_frame(path)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _check_lengths(folder: Path, frames: list[Path], boxes: np.ndarray) -> None:
    if not frames:
        raise DatasetError(f"{folder}: no image files")
    if len(frames) != len(boxes):
        raise DatasetError(f"{folder}: {len(frames)} frames but {len(boxes)} ground-truth boxes")


def read_lasot_sequence(folder: str | os.PathLike) -> SequenceFolder:
    folder = Path(folder)
    if not (folder / "img").is_dir():
        raise DatasetError(f"{folder}: not a LaSOT sequence (no img/ folder)")
    frames = _images_in(folder / "img")
    boxes = read_boxes(folder / "groundtruth.txt")
    _check_lengths(folder, frames, boxes)
    absent = np.zeros(len(boxes), dtype=bool)
    for flag_file in ("full_occlusion.txt", "out_of_view.txt"):
        if (folder / flag_file).is_file():
            absent |= _read_flags(folder / flag_file, len(boxes))
    return SequenceFolder(folder.name, frames, boxes, absent)


def read_got10k_sequence(folder: str | os.PathLike) -> SequenceFolder:
    folder = Path(folder)
    frames = _images_in(folder)
    gt_file = folder / "groundtruth.txt"
    if not gt_file.is_file():
        raise DatasetError(f"{folder}: no groundtruth.txt")
    boxes = read_boxes(gt_file)
    if len(boxes) == 1 and len(frames) > 1:
        # GOT-10k's test split ships only the first box; evaluation is then not possible.
        boxes = np.vstack([boxes, np.full((len(frames) - 1, 4), np.nan)])
    _check_lengths(folder, frames, boxes)
    absent = np.zeros(len(boxes), dtype=bool)
    if (folder / "absence.label").is_file():
        absent = _read_flags(folder / "absence.label", len(boxes))
    return SequenceFolder(folder.name, frames, boxes, absent)


def read_sequence(folder: str | os.PathLike) -> SequenceFolder:
    """Either layout, detected from the folder (an `img/` subfolder means LaSOT)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: not a folder")
    if (folder / "img").is_dir():
        return read_lasot_sequence(folder)
    return read_got10k_sequence(folder)


def read_dataset(root: str | os.PathLike) -> list[SequenceFolder]:
    """Every sequence folder under `root` (searched two levels deep, as LaSOT nests by category)."""
    root = Path(root)
    found = []
    for gt in sorted(root.glob("groundtruth.txt")) + sorted(root.glob("*/groundtruth.txt")) + sorted(
        root.glob("*/*/groundtruth.txt")
    ):
        found.append(read_sequence(gt.parent))
    if not found:
        raise DatasetError(f"{root}: no sequence folders (with groundtruth.txt) found")
    return found


def write_sequence_folder(sequence: object, folder: str | os.PathLike, layout: str = "lasot",
                          absent: Sequence[bool] | None = None, image_format: str = "jpg",
                          quality: int = 95) -> Path:
    """Materialise a sequence (`.frames` and `.boxes`, e.g. a SyntheticSequence) as a sequence folder.

    `layout` is "lasot" (frames in img/, absence in full_occlusion.txt + zero out_of_view.txt) or
    "got10k" (frames beside groundtruth.txt, absence in absence.label). Use image_format="png" for
    lossless frames.
    """
    frames = list(sequence.frames)  # type: ignore[attr-defined]
    boxes = np.asarray(sequence.boxes, dtype=np.float64)  # type: ignore[attr-defined]
    if len(frames) != len(boxes):
        raise ValueError(f"{len(frames)} frames but {len(boxes)} boxes")
    flags = np.zeros(len(frames), dtype=int) if absent is None else np.asarray(absent, dtype=int)
    folder = Path(folder)
    if layout == "lasot":
        img_dir = folder / "img"
    elif layout == "got10k":
        img_dir = folder
    else:
        raise ValueError(f"layout must be 'lasot' or 'got10k', got {layout!r}")
    img_dir.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames, 1):
        path = img_dir / f"{i:08d}.{image_format}"
        kwargs = {"quality": quality} if image_format in ("jpg", "jpeg") else {}
        Image.fromarray(frame).save(path, **kwargs)
    write_boxes(folder / "groundtruth.txt", boxes)
    if layout == "lasot":
        (folder / "full_occlusion.txt").write_text(",".join(str(int(f)) for f in flags) + "\n")
        (folder / "out_of_view.txt").write_text(",".join("0" for _ in flags) + "\n")
    else:
        (folder / "absence.label").write_text("\n".join(str(int(f)) for f in flags) + "\n")
    return folder
