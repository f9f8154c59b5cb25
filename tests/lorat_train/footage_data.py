"""Small footage on disk for the training tests: a LaSOT-style sequence, a video + box file, a COCO-style file,
and the bad cases `--check-data` must name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from lorat_infer.cli.video import VideoWriter
from lorat_infer.eval.datasets import write_boxes, write_sequence_folder
from lorat_infer.eval.synthetic import generate_sequence

SIZE = (96, 80)  # (W, H)


def write_video(path: Path, seed: int, n: int = 8, absent: tuple[int, ...] = (), box_lines: int | None = None) -> None:
    seq = generate_sequence(seed, n, size=SIZE)
    writer = VideoWriter(path, fps=10, crf=18)
    for frame in seq.frames:
        writer.write(frame)
    writer.close()
    lines = ["" if i in absent else ",".join(f"{v:.2f}" for v in box) for i, box in enumerate(seq.boxes)]
    if box_lines is not None:
        lines = lines[:box_lines]
    path.with_suffix(".txt").write_text("\n".join(lines) + "\n")


def write_coco(folder: Path, seed: int, annotations: list[dict] | None = None) -> Path:
    """Two still images and a box on each (or the given annotations)."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    images = []
    for i in range(2):
        seq = generate_sequence(seed + i, 1, size=SIZE)
        Image.fromarray(seq.frames[0]).save(folder / "images" / f"img{i}.png")
        images.append({"id": i + 1, "file_name": f"img{i}.png", "width": SIZE[0], "height": SIZE[1],
                       "_box": [float(v) for v in seq.boxes[0]]})
    if annotations is None:
        annotations = [{"id": 10 + k, "image_id": img["id"], "bbox": img["_box"], "iscrowd": 0, "category_id": 1}
                       for k, img in enumerate(images)]
    for img in images:
        del img["_box"]
    path = folder / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1}]}))
    return path


def write_mixed_footage(root: Path, seed: int = 0) -> Path:
    """A LaSOT-style sequence, a video with a box file (one absent frame), a small COCO-style file."""
    seq = generate_sequence(seed, 8, size=SIZE)
    write_sequence_folder(seq, root / "lasot" / "cat" / "cat-1", "lasot", image_format="png")
    write_video(root / "cams" / "cam1.mp4", seed + 1, absent=(3,))
    write_coco(root / "coco", seed + 2)
    return root


def write_bad_footage(root: Path) -> dict[str, str]:
    """Each bad case, and a fragment the report must contain for it (path[:line] and what is wrong)."""
    expect: dict[str, str] = {}
    # 1. a box 5000 px outside the frame (line 3)
    seq = generate_sequence(1, 6, size=SIZE)
    far = root / "lasot" / "car" / "car-far"
    write_sequence_folder(seq, far, "lasot", image_format="png")
    boxes = seq.boxes.copy()
    boxes[2] = [5000.0, 5000.0, 20.0, 20.0]
    write_boxes(far / "groundtruth.txt", boxes)
    expect["far"] = f"{far / 'groundtruth.txt'}:3: box (5000, 5000, 20, 20) lies entirely outside"
    # 2. x1,y1,x2,y2 boxes in a GOT-10k-style sequence
    xyxy = root / "got" / "GOT-xyxy"
    write_sequence_folder(generate_sequence(2, 6, size=SIZE), xyxy, "got10k", image_format="png")
    xs = np.linspace(10, 60, 6)
    write_boxes(xyxy / "groundtruth.txt", np.stack([xs, np.full(6, 20.0), xs + 24, np.full(6, 40.0)], axis=1))
    expect["xyxy"] = f"{xyxy / 'groundtruth.txt'}: boxes look like x1,y1,x2,y2"
    # 3. fewer boxes than frames
    count = root / "got" / "GOT-count"
    seq = generate_sequence(3, 6, size=SIZE)
    write_sequence_folder(seq, count, "got10k", image_format="png")
    write_boxes(count / "groundtruth.txt", seq.boxes[:5])
    (count / "absence.label").unlink()
    expect["count"] = f"{count}: 6 frames but 5 boxes"
    # 4. a corrupt frame
    corrupt = root / "got" / "GOT-corrupt"
    write_sequence_folder(generate_sequence(4, 6, size=SIZE), corrupt, "got10k", image_format="png")
    data = (corrupt / "00000003.png").read_bytes()
    (corrupt / "00000003.png").write_bytes(data[: len(data) // 3])
    expect["corrupt"] = f"{corrupt / '00000003.png'}: unreadable image"
    # 5. lines that are not boxes (line 2 text, line 4 three values)
    text = root / "got" / "GOT-text"
    seq = generate_sequence(5, 6, size=SIZE)
    write_sequence_folder(seq, text, "got10k", image_format="png")
    lines = (text / "groundtruth.txt").read_text().splitlines()
    lines[1], lines[3] = "a,b,c,d", "1,2,3"
    (text / "groundtruth.txt").write_text("\n".join(lines) + "\n")
    expect["text"] = f"{text / 'groundtruth.txt'}:2: not numbers"
    expect["three"] = f"{text / 'groundtruth.txt'}:4: expected 4 values"
    # 6. a video whose box file is short, 7. a corrupt video, 8. a video without a box file
    cams = root / "cams"
    cams.mkdir(parents=True, exist_ok=True)
    write_video(cams / "short.mp4", 6, box_lines=5)
    expect["short"] = f"{cams / 'short.txt'}: 5 lines for 8 video frames"
    (cams / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    (cams / "broken.txt").write_text("1,2,3,4\n")
    expect["broken"] = f"{cams / 'broken.mp4'}: unreadable or corrupt video"
    write_video(cams / "nobox.mp4", 7)
    (cams / "nobox.txt").unlink()
    expect["nobox"] = f"{cams / 'nobox.mp4'}: no box file nobox.txt"
    # 9. COCO: a box outside its image, an unknown image id, a missing image file
    coco = write_coco(root / "coco", 8, annotations=[
        {"id": 1, "image_id": 1, "bbox": [300.0, 10.0, 20.0, 20.0], "iscrowd": 0},
        {"id": 2, "image_id": 99, "bbox": [1.0, 1.0, 10.0, 10.0], "iscrowd": 0},
        {"id": 3, "image_id": 2, "bbox": [5.0, 5.0, 30.0, 30.0], "iscrowd": 0},
    ])
    (root / "coco" / "images" / "img1.png").unlink()
    expect["coco-outside"] = f"{coco}:annotations[0]:1: box (300, 10, 20, 20) lies entirely outside"
    expect["coco-id"] = f"{coco}:annotations[1]: image_id 99 is not in images"
    expect["coco-missing"] = f"{coco}:annotations[2]: image file {root / 'coco' / 'images' / 'img1.png'} not found"
    return expect
