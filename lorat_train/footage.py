"""Training footage as it comes: find it, read it, and say precisely what is wrong with it.

Layouts understood (`discover`):
- sequence folders: LaSOT (`img/` + `groundtruth.txt`, optional `full_occlusion.txt` / `out_of_view.txt`) and
  GOT-10k (frames beside `groundtruth.txt`, optional `absence.label`);
- TrackingNet chunks: `anno/<name>.txt` + `frames/<name>/<i>.jpg`;
- video files with a box file beside them: `clip.mp4` + `clip.txt`, one `x,y,w,h` or an empty line
  (target absent) per frame, read with PyAV;
- COCO-style JSON (`images`, `annotations` with xywh `bbox`): every non-crowd box is a one-frame sequence,
  and pairs are made from it by the search-crop jitter and augmentation, as the authors do with COCO.

Every reader also produces `Problem`s naming the file and line; `check_paths` (behind `lorat-train
--check-data`) and the trainer's pre-flight check gather them. Boxes are x,y,w,h in frame pixels.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from lorat_infer.eval.datasets import IMAGE_SUFFIXES, load_frame

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".ts")
EDGE_TOLERANCE = 1.0  # px a box may pass the frame edge before it counts as overflowing


class DataError(ValueError):
    """Training data that cannot be used; the message is the whole report."""


@dataclass
class Problem:
    where: str  # path, or path:line
    message: str
    error: bool = True

    def __str__(self) -> str:
        return f"{'ERROR' if self.error else 'warning'} {self.where}: {self.message}"


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    sequences: int = 0
    frames: int = 0
    boxes: int = 0

    def error(self, where: object, message: str) -> None:
        self.problems.append(Problem(str(where), message, True))

    def warn(self, where: object, message: str) -> None:
        self.problems.append(Problem(str(where), message, False))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.error]

    def format(self) -> str:
        lines = [str(p) for p in self.problems]
        verdict = "UNUSABLE" if self.errors else "OK"
        lines.append(f"{verdict}: {self.sequences} sequences, {self.frames} frames, {self.boxes} boxes; "
                     f"{len(self.errors)} errors, {len(self.problems) - len(self.errors)} warnings")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------- sequences


@dataclass
class FrameSequence:
    """Frames on disk (image files) with xywh boxes; NaN or non-positive boxes and `absent` mean no target."""

    name: str
    frame_paths: list[Path]
    boxes: np.ndarray
    absent: np.ndarray

    def __len__(self) -> int:
        return len(self.frame_paths)

    def frame(self, index: int) -> np.ndarray:
        try:
            return load_frame(self.frame_paths[index])
        except Exception as exc:  # a file that broke after the check: name it
            raise DataError(f"{self.frame_paths[index]}: unreadable image: {exc}") from exc


# ------------------------------------------------------------------------------------------- parsing


def parse_box_file(path: Path, report: Report, empty_is_absent: bool) -> np.ndarray | None:
    """(N, 4) xywh, NaN rows for absent targets; each bad line is reported with its number.

    `empty_is_absent`: an empty line is a frame without a target (video box files); otherwise empty lines are
    skipped (LaSOT / GOT-10k files have none). A trailing newline never counts as a frame.
    """
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        report.error(path, f"unreadable box file: {exc}")
        return None
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    rows: list[list[float]] = []
    bad = False
    for lineno, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            if empty_is_absent:
                rows.append([np.nan] * 4)
            continue
        parts = line.replace(",", " ").replace("\t", " ").split()
        try:
            values = [float(p) for p in parts]
        except ValueError:
            report.error(f"{path}:{lineno}", f"not numbers: {line!r}")
            bad = True
            continue
        if len(values) != 4:
            report.error(f"{path}:{lineno}", f"expected 4 values x,y,w,h, got {len(values)}: {line!r}")
            bad = True
            continue
        rows.append(values)
    if bad:
        return None
    if not rows:
        report.error(path, "no boxes")
        return None
    return np.asarray(rows, dtype=np.float64)


def visible(boxes: np.ndarray) -> np.ndarray:
    return np.all(np.isfinite(boxes), axis=1) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)


def check_boxes(where: str, boxes: np.ndarray, sizes_wh: np.ndarray, report: Report,
                line_numbers: np.ndarray | None = None, per_box_xyxy: bool = False) -> bool:
    """Geometry checks of xywh boxes against their frames' (W, H); False when anything is unusable.

    - negative width/height: an error (x1,y1,x2,y2 with x2 < x1 reads so);
    - a box that does not overlap its frame at all: an error (it would train on padding);
    - x1,y1,x2,y2 read as x,y,w,h: boxes overflow the frame as xywh, yet every box fits as xyxy (for a
      sequence; `per_box_xyxy` judges each box alone, for still images whose boxes never leave the image);
    - partial overflow: a warning (the box is clipped, as the authors' data cleaning does).
    """
    n = len(boxes)
    lines = np.arange(1, n + 1) if line_numbers is None else line_numbers
    finite = np.all(np.isfinite(boxes), axis=1)
    ok = True
    negative = finite & ((boxes[:, 2] < 0) | (boxes[:, 3] < 0))
    for i in np.flatnonzero(negative)[:20]:
        report.error(f"{where}:{lines[i]}", f"negative width/height in {_fmt(boxes[i])} (x,y,w,h expected)")
    ok &= not negative.any()
    vis = visible(boxes)
    if not vis.any():
        report.error(where, "no frame with a visible target box")
        return False
    b, wh = boxes[vis], sizes_wh[vis]
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    outside = (x2 <= 0) | (y2 <= 0) | (x1 >= wh[:, 0]) | (y1 >= wh[:, 1])
    overflow = (x1 < -EDGE_TOLERANCE) | (y1 < -EDGE_TOLERANCE) | (x2 > wh[:, 0] + EDGE_TOLERANCE) | (
        y2 > wh[:, 1] + EDGE_TOLERANCE)
    fits_xyxy = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1]) & (b[:, 2] <= wh[:, 0] + EDGE_TOLERANCE) & (
        b[:, 3] <= wh[:, 1] + EDGE_TOLERANCE) & (b[:, 0] >= -EDGE_TOLERANCE) & (b[:, 1] >= -EDGE_TOLERANCE)
    vis_lines = lines[vis]
    for i in np.flatnonzero(outside)[:20]:
        report.error(f"{where}:{vis_lines[i]}", f"box {_fmt(b[i])} lies entirely outside the "
                                                f"{wh[i, 0]:.0f}x{wh[i, 1]:.0f} frame")
    if outside.sum() > 20:
        report.error(where, f"{int(outside.sum())} boxes lie entirely outside the frame in all")
    ok &= not outside.any()
    xyxy = overflow & fits_xyxy & ~outside
    if per_box_xyxy:
        flagged = np.flatnonzero(xyxy)
    else:
        flagged = np.flatnonzero(xyxy) if xyxy.any() and fits_xyxy.all() else np.array([], dtype=int)
    if len(flagged):
        shown = ", ".join(str(vis_lines[i]) for i in flagged[:8])
        report.error(where if not per_box_xyxy else f"{where}:{vis_lines[flagged[0]]}",
                     f"boxes look like x1,y1,x2,y2, not x,y,w,h: line(s) {shown} overflow the frame as x,y,w,h "
                     f"(e.g. {_fmt(b[flagged[0]])}) but fit as x1,y1,x2,y2")
        ok = False
    partial = overflow & ~outside & ~xyxy
    if partial.any() and len(flagged) == 0:
        report.warn(where, f"{int(partial.sum())} boxes cross the frame edge (clipped), first at line "
                           f"{vis_lines[np.flatnonzero(partial)[0]]}")
    report.boxes += int(vis.sum())
    return bool(ok)


def _fmt(box: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:g}" for v in box) + ")"


def image_size(path: Path, report: Report, decode: bool) -> tuple[int, int] | None:
    """(W, H) of an image file; `decode` reads every pixel (catches truncated files)."""
    try:
        with Image.open(path) as img:
            size = img.size
            if decode:
                img.load()
        return size
    except Exception as exc:  # PIL raises many types for broken files
        report.error(path, f"unreadable image: {exc}")
        return None


def _read_flags(path: Path, n: int, report: Report) -> np.ndarray | None:
    try:
        flags = np.array([int(float(t)) for t in path.read_text().replace(",", " ").split()], dtype=bool)
    except (ValueError, OSError) as exc:
        report.error(path, f"flags must be 0/1: {exc}")
        return None
    if flags.shape != (n,):
        report.error(path, f"{flags.size} flags for {n} frames")
        return None
    return flags


def _frames_sizes(paths: list[Path], report: Report, decode: bool) -> np.ndarray | None:
    sizes = [image_size(p, report, decode) for p in paths]
    if any(s is None for s in sizes):
        return None
    return np.asarray(sizes, dtype=np.float64)


# ------------------------------------------------------------------------------------------- readers


def _finish_sequence(where: str, name: str, frames: list[Path], boxes: np.ndarray | None, absent_files: list[Path],
                     report: Report, mode: str, box_file: Path) -> FrameSequence | None:
    if not frames:
        report.error(where, "no image files")
        return None
    if boxes is None:
        return None
    if len(frames) != len(boxes):
        report.error(where, f"{len(frames)} frames but {len(boxes)} boxes")
        return None
    absent = np.zeros(len(boxes), dtype=bool)
    for flag_file in absent_files:
        if flag_file.is_file():
            flags = _read_flags(flag_file, len(boxes), report)
            if flags is None:
                return None
            absent |= flags
    usable = True
    if mode != "off":
        sizes = _frames_sizes(frames, report, decode=mode == "full")
        if sizes is None:
            return None
        masked = boxes.copy()
        masked[absent] = np.nan
        usable = check_boxes(str(box_file), masked, sizes, report)
    report.sequences += 1
    report.frames += len(frames)
    return FrameSequence(name, frames, boxes, absent) if usable else None


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def read_sequence_folder(folder: Path, report: Report, mode: str) -> FrameSequence | None:
    """LaSOT (`img/`) or GOT-10k layout."""
    gt = folder / "groundtruth.txt"
    boxes = parse_box_file(gt, report, empty_is_absent=False)
    if (folder / "img").is_dir():
        frames = _images_in(folder / "img")
        flags = [folder / "full_occlusion.txt", folder / "out_of_view.txt"]
    else:
        frames = _images_in(folder)
        flags = [folder / "absence.label"]
        if boxes is not None and len(boxes) == 1 and len(frames) > 1:
            report.error(gt, "one box for many frames (a GOT-10k test sequence): not training data")
            return None
    return _finish_sequence(str(folder), folder.name, frames, boxes, flags, report, mode, gt)


def read_trackingnet_chunk(chunk: Path, report: Report, mode: str) -> list[FrameSequence]:
    out = []
    for anno in sorted((chunk / "anno").glob("*.txt")):
        folder = chunk / "frames" / anno.stem
        if not folder.is_dir():
            report.error(anno, f"no frame folder {folder}")
            continue
        frames = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
                        key=lambda p: (len(p.stem), p.stem))
        seq = _finish_sequence(str(folder), anno.stem, frames, parse_box_file(anno, report, False), [], report, mode,
                               anno)
        if seq is not None:
            out.append(seq)
    return out


def video_box_file(video: Path) -> Path:
    return video.with_suffix(".txt")


def decode_video(path: Path, report: Report) -> Iterator[np.ndarray]:
    """Frames as HxWx3 uint8 RGB; a decoding failure is reported (with the frame number) and ends the stream."""
    import av

    index = 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                report.error(path, "no video stream")
                return
            for frame in container.decode(video=0):
                yield frame.to_ndarray(format="rgb24")
                index += 1
    except Exception as exc:  # av.error.FFmpegError and friends
        report.error(path, f"unreadable or corrupt video (after {index} frames): {exc}")


def read_video(path: Path, report: Report, mode: str, cache_dir: Path | None) -> FrameSequence | None:
    """A video + its box file; decoded frames go to `cache_dir` as JPEG files so pairs can be drawn cheaply."""
    box_file = video_box_file(path)
    if not box_file.is_file():
        report.error(path, f"no box file {box_file.name} beside the video (one x,y,w,h or empty line per frame)")
        return None
    boxes = parse_box_file(box_file, report, empty_is_absent=True)
    errors_before = len(report.errors)
    target = None
    if cache_dir is not None:
        stat = path.stat()
        key = hashlib.sha1(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
        target = cache_dir / f"{path.stem}-{key}"
    frames: list[Path] = []
    sizes: list[tuple[int, int]] = []
    if target is not None and (target / "done").is_file():
        frames = _images_in(target)
        sizes = [tuple(json.loads((target / "done").read_text())["size"])] * len(frames)
    else:
        if target is not None:
            target.mkdir(parents=True, exist_ok=True)
        for i, frame in enumerate(decode_video(path, report)):
            sizes.append((frame.shape[1], frame.shape[0]))
            if target is not None:
                p = target / f"{i + 1:08d}.jpg"
                Image.fromarray(frame).save(p, quality=95)
                frames.append(p)
            else:
                frames.append(Path(f"{path}#{i}"))
        if len(report.errors) > errors_before:
            return None
        if target is not None and sizes:
            (target / "done").write_text(json.dumps({"size": sizes[0], "frames": len(frames)}))
    if not frames:
        report.error(path, "no frames decoded")
        return None
    if boxes is None:
        return None
    if len(frames) != len(boxes):
        report.error(box_file, f"{len(boxes)} lines for {len(frames)} video frames (one line per frame, "
                               "empty when the target is absent)")
        return None
    usable = check_boxes(str(box_file), boxes, np.asarray(sizes, dtype=np.float64), report) if mode != "off" else True
    report.sequences += 1
    report.frames += len(frames)
    if not usable:
        return None
    return FrameSequence(path.stem, frames, boxes, np.zeros(len(boxes), dtype=bool))


def _coco_image_dir(json_path: Path, images: str) -> Path:
    if images:
        return Path(images)
    for candidate in (json_path.parent / "images", json_path.parent / json_path.stem):
        if candidate.is_dir():
            return candidate
    return json_path.parent


def read_coco(json_path: Path, report: Report, mode: str, images: str = "") -> list[FrameSequence]:
    """Every non-crowd annotation box as a one-frame sequence."""
    try:
        data = json.loads(json_path.read_text())
        image_list, annotations = data["images"], data["annotations"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        report.error(json_path, f"not a COCO-style annotation file (images, annotations): {exc}")
        return []
    root = _coco_image_dir(json_path, images)
    by_id = {}
    for img in image_list:
        try:
            by_id[img["id"]] = img
        except (KeyError, TypeError):
            report.error(json_path, f"image entry without id: {img!r}"[:200])
    checked: dict[object, tuple[int, int] | None] = {}
    out = []
    for k, ann in enumerate(annotations):
        where = f"{json_path}:annotations[{k}]"
        if not isinstance(ann, dict) or ann.get("iscrowd", 0):
            continue
        img = by_id.get(ann.get("image_id"))
        if img is None:
            report.error(where, f"image_id {ann.get('image_id')!r} is not in images")
            continue
        path = root / str(img.get("file_name", ""))
        if img["id"] not in checked:
            if not path.is_file():
                report.error(where, f"image file {path} not found")
                checked[img["id"]] = None
            elif mode == "off":
                checked[img["id"]] = (int(img.get("width", 0)), int(img.get("height", 0)))
            else:
                size = image_size(path, report, decode=mode == "full")
                if size is not None and "width" in img and tuple(size) != (img["width"], img["height"]):
                    report.error(path, f"file is {size[0]}x{size[1]} but the JSON says {img['width']}x{img['height']}")
                    size = None
                checked[img["id"]] = size
                if size is not None:
                    report.frames += 1
        size = checked[img["id"]]
        if size is None:
            continue
        try:
            box = np.asarray(ann["bbox"], dtype=np.float64).reshape(1, 4)
        except (KeyError, ValueError, TypeError):
            report.error(where, f"bbox must be [x, y, w, h]: {ann.get('bbox')!r}")
            continue
        if not visible(box).all():
            continue  # empty boxes are dropped, as the authors' data cleaning does
        if mode != "off" and not check_boxes(where, box, np.asarray([size], dtype=np.float64), report,
                                             per_box_xyxy=True):
            continue
        report.sequences += 1
        out.append(FrameSequence(f"{json_path.stem}-{ann.get('id', k)}", [path], box, np.zeros(1, dtype=bool)))
    return out


# ----------------------------------------------------------------------------------------- discovery


def _is_coco(path: Path) -> bool:
    if path.suffix.lower() != ".json":
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return False
    return b'"annotations"' in head or b'"images"' in head


def discover(root: Path, kind: str = "auto") -> list[tuple[str, Path]]:
    """(kind, path) items under `root`: sequence, trackingnet, video, coco. A file root is one item."""
    if root.is_file():
        if root.suffix.lower() in VIDEO_SUFFIXES:
            return [("video", root)]
        if root.suffix.lower() == ".json":
            return [("coco", root)]
        return [("unknown", root)]
    items: list[tuple[str, Path]] = []

    def walk(folder: Path, depth: int) -> None:
        if (folder / "groundtruth.txt").is_file():
            items.append(("sequence", folder))
            return
        if (folder / "anno").is_dir() and (folder / "frames").is_dir():
            items.append(("trackingnet", folder))
            return
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            return
        for entry in entries:
            if entry.is_file():
                suffix = entry.suffix.lower()
                if suffix in VIDEO_SUFFIXES and kind in ("auto", "video"):
                    items.append(("video", entry))
                elif suffix == ".json" and kind in ("auto", "coco") and _is_coco(entry):
                    items.append(("coco", entry))
            elif entry.is_dir() and depth < 4:
                walk(entry, depth + 1)

    walk(root, 0)
    wanted = {"lasot": "sequence", "got10k": "sequence", "trackingnet": "trackingnet", "video": "video",
              "coco": "coco"}.get(kind)
    return [i for i in items if wanted is None or i[0] == wanted]


def read_path(root: str | os.PathLike, report: Report, mode: str = "full", kind: str = "auto",
              cache_dir: Path | None = None, images: str = "", names: set[str] | None = None) -> list[FrameSequence]:
    """Every usable sequence under `root`; problems go to `report`."""
    root = Path(root)
    if not root.exists():
        report.error(root, "no such file or folder")
        return []
    items = discover(root, kind)
    if not items:
        report.error(root, "no training data found (sequence folders with groundtruth.txt, TrackingNet anno/ + "
                           "frames/, videos with a .txt box file, or COCO-style .json)")
    out: list[FrameSequence] = []
    for item_kind, path in items:
        if names is not None and item_kind in ("sequence", "video") and not {path.stem, path.name} & names:
            continue
        if item_kind == "sequence":
            seq = read_sequence_folder(path, report, mode)
            out += [seq] if seq is not None else []
        elif item_kind == "trackingnet":
            out += [s for s in read_trackingnet_chunk(path, report, mode) if names is None or s.name in names]
        elif item_kind == "video":
            seq = read_video(path, report, mode, cache_dir)
            out += [seq] if seq is not None else []
        elif item_kind == "coco":
            out += read_coco(path, report, mode, images)
        else:
            report.error(path, "not a video (" + ", ".join(VIDEO_SUFFIXES) + ") or a COCO-style .json file")
    return out


def check_paths(paths: list[str], mode: str = "full") -> Report:
    """`lorat-train --check-data`: read everything (no frame cache), collect every problem."""
    report = Report()
    for p in paths:
        read_path(p, report, mode=mode)
    return report
