"""Training sequences made from still photographs: real objects moving over real backgrounds.

Siamese trackers have long been trained on still images turned into pairs (SiamFC, SiamRPN++, LoRAT's COCO
share). Here a region cut from one photo (with a rectangular, elliptical or polygonal soft mask, so it has
an outline) moves over a crop of another photo along a smooth path, changing scale, rotation, shear and
lighting, sometimes blurred; look-alike distractors (the same cut, recoloured) and other cut-outs move
around it, an occluder cut from a third photo may pass in front, the "camera" drifts, and the whole clip may
be JPEG-compressed and noisy. The box is the object's full extent (occluded or not), as in the synthetic
generator.

`PhotoPool` is a data source for `lorat_train.data.PairSampler` (`type: photos`, `root:` a folder of photos
or several joined with `:`). Like the synthetic pool, which sequence sits in which slot is a closed-form
function of the step, and every sequence is a pure function of (seed, offset, id), so resumed runs draw the
same batches. `python -m lorat_train.photos ROOT OUT` writes held-out sequences to disk (GOT-10k layout).
"""

from __future__ import annotations

import argparse
import functools
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
MAX_SIDE = 720  # photos are downscaled once on loading: sequences are at most 480 px wide


@dataclass
class PhotoSequence:
    frames: list[np.ndarray]  # (H, W, 3) uint8 RGB
    boxes: np.ndarray  # (N, 4) xywh

    def frame(self, index: int) -> np.ndarray:
        return self.frames[index]


def list_photos(root: str) -> list[Path]:
    """Every photo under the folders of `root` (`:`-separated), sorted, so the library order is stable."""
    paths: list[Path] = []
    for part in root.split(":"):
        if part:
            paths += [p for p in Path(part).expanduser().rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES]
    return sorted(set(paths))


def _load(path: Path) -> np.ndarray | None:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None or min(img.shape[:2]) < 96:
        return None
    scale = MAX_SIDE / max(img.shape[:2])
    if scale < 1:
        img = cv2.resize(img, (round(img.shape[1] * scale), round(img.shape[0] * scale)),
                         interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(img[:, :, ::-1])


@functools.lru_cache(maxsize=4)
def load_library(root: str) -> tuple[np.ndarray, ...]:
    """All usable photos of `root`, RGB uint8, longer side at most MAX_SIDE (cached per process)."""
    images = [img for img in (_load(p) for p in list_photos(root)) if img is not None]
    if not images:
        raise ValueError(f"no photos (jpg/png/webp of at least 96 px) under {root!r}")
    return tuple(images)


def _random_crop(rng: np.random.Generator, img: np.ndarray, w: int, h: int, zoom: float) -> np.ndarray:
    """A w x h view of `img` covering 1/zoom of its largest fitting window (upscaled when needed)."""
    ih, iw = img.shape[:2]
    side = min(iw / w, ih / h) / zoom
    cw, ch = max(int(w * side), 8), max(int(h * side), 8)
    x, y = int(rng.integers(0, iw - cw + 1)), int(rng.integers(0, ih - ch + 1))
    return cv2.resize(img[y:y + ch, x:x + cw], (w, h), interpolation=cv2.INTER_AREA if side > 1 else
                      cv2.INTER_LINEAR)


def _mask(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A soft 0..1 alpha of the object's outline: rectangle, ellipse or random polygon."""
    kind = int(rng.choice(3, p=[0.35, 0.3, 0.35]))
    m = np.zeros((h, w), np.uint8)
    if kind == 0:
        m[:] = 255
    elif kind == 1:
        cv2.ellipse(m, (w // 2, h // 2), (max(w // 2 - 1, 1), max(h // 2 - 1, 1)), 0, 0, 360, 255, -1)
    else:
        k = int(rng.integers(5, 10))
        ang = np.sort(rng.uniform(0, 2 * np.pi, k))
        rad = rng.uniform(0.6, 1.0, k)
        pts = np.stack([w / 2 + np.cos(ang) * rad * (w / 2 - 1), h / 2 + np.sin(ang) * rad * (h / 2 - 1)], 1)
        cv2.fillPoly(m, [pts.astype(np.int32)], 255)
    return cv2.GaussianBlur(m, (3, 3), 0).astype(np.float32) / 255.0


def _cutout(rng: np.random.Generator, library: tuple[np.ndarray, ...], size: int) -> tuple[np.ndarray, np.ndarray]:
    """(RGB float patch, alpha) cut from a random photo, `size` px on its longer side at scale 1."""
    img = library[int(rng.integers(len(library)))]
    aspect = float(np.exp(rng.uniform(-1.1, 1.0)))  # down to 1:3 (people) and up to 2.7:1
    w, h = (size, max(int(size / aspect), 6)) if aspect >= 1 else (max(int(size * aspect), 6), size)
    patch = _random_crop(rng, img, w, h, float(np.exp(rng.uniform(0.0, 1.8))))
    return patch.astype(np.float32), _mask(rng, w, h)


def _part_cutout(rng: np.random.Generator, library: tuple[np.ndarray, ...], size: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A target that is part of a bigger thing (a face on a head and body, a label on a box): (RGB patch of
    the whole, its alpha, the part's alpha). The whole is the photo's own continuation around the part, so the
    tracker must learn where the part ends rather than follow the whole similar-looking region."""
    img = library[int(rng.integers(len(library)))]
    aspect = float(np.exp(rng.uniform(-0.6, 0.4)))
    w, h = (size, max(int(size / aspect), 6)) if aspect >= 1 else (max(int(size * aspect), 6), size)
    left, right = (int(w * rng.uniform(0.1, 0.7)) for _ in range(2))
    top, bottom = int(h * rng.uniform(0.05, 0.5)), int(h * rng.uniform(0.3, 1.5))
    big_w, big_h = w + left + right, h + top + bottom
    patch = _random_crop(rng, img, big_w, big_h, float(np.exp(rng.uniform(0.0, 0.6)))).astype(np.float32)
    part = np.zeros((big_h, big_w), np.float32)
    part[top:top + h, left:left + w] = _mask(rng, w, h)
    whole = np.maximum(_mask(rng, big_w, big_h), (part > 0).astype(np.float32))
    return patch, whole, part


def _changed_view(rng: np.random.Generator, patch: np.ndarray) -> np.ndarray:
    """What the same object looks like a moment later (turned, re-lit): the patch mirrored, or its content
    shifted and zoomed a little, with a colour cast; the target blends into it over the clip."""
    h, w = patch.shape[:2]
    if rng.random() < 0.4:
        out = patch[:, ::-1].copy()
    else:
        z = float(np.exp(rng.uniform(-0.15, 0.15)))
        m = np.float32([[z, 0, (1 - z) * w / 2 + rng.uniform(-0.25, 0.25) * w],
                        [0, z, (1 - z) * h / 2 + rng.uniform(-0.15, 0.15) * h]])
        out = cv2.warpAffine(patch, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return np.clip(out * rng.uniform(0.8, 1.2, 3).astype(np.float32), 0, 255)


class _Mover:
    """One pasted thing: a patch + alpha moving along a smooth path with scale, rotation and shear drift."""

    def __init__(self, rng: np.random.Generator, patch: np.ndarray, alpha: np.ndarray, n: int, w: int, h: int,
                 speed: float, centre: np.ndarray | None = None, hold: bool = False,
                 part: np.ndarray | None = None) -> None:
        self.patch, self.alpha, self.part = patch, alpha, part  # the box is the part's extent when given
        ph, pw = alpha.shape
        self.base = np.float32([[1, 0, -pw / 2], [0, 1, -ph / 2]])
        diag = float(np.hypot(w, h))
        scale = np.exp(np.cumsum(rng.normal(0, rng.uniform(0.005, 0.03), n)))
        rot = np.cumsum(rng.normal(0, rng.uniform(0.0, 0.04), n)) * float(rng.random() < 0.6)
        shear = np.clip(np.cumsum(rng.normal(0, 0.01, n)), -0.25, 0.25) * float(rng.random() < 0.4)
        gain = np.clip(np.exp(np.cumsum(rng.normal(0, 0.02, n))), 0.6, 1.5)
        self.patch2, mix, yaw, wobble = None, np.zeros(n), np.zeros(n), 0.0
        if hold:  # a face / hand-held object: stays roughly put, tilts, turns and changes appearance
            scale = np.clip(np.exp(np.cumsum(rng.normal(0, rng.uniform(0.003, 0.012), n))), 0.8, 1.25)
            rot = np.clip(np.cumsum(rng.normal(0, rng.uniform(0.005, 0.03), n)), -0.35, 0.35)
            yaw = np.clip(np.cumsum(rng.normal(0, rng.uniform(0.0, 0.06), n)), -0.6, 0.6)
            self.patch2 = _changed_view(rng, patch)
            mix = np.clip(np.cumsum(np.abs(rng.normal(0, rng.uniform(0.01, 0.06), n))), 0, 0.85)
            wobble = float(rng.uniform(0.0, 0.004)) * diag  # hand-held jitter (px per frame)
        self.mix = mix
        centre = rng.uniform([0.2 * w, 0.2 * h], [0.8 * w, 0.8 * h]) if centre is None else centre.copy()
        heading, v = rng.uniform(0, 2 * np.pi), speed * diag
        self.frames = []
        for t in range(n):
            c, s = np.cos(rot[t]) * scale[t], np.sin(rot[t]) * scale[t]
            lin = np.array([[c, -s], [s, c]]) @ np.array([[1, shear[t]], [0, 1]]) @ np.diag([np.cos(yaw[t]), 1.0])
            self.frames.append((lin, centre + rng.normal(0, wobble, 2) if wobble else centre.copy(), gain[t]))
            heading += rng.normal(0, 0.3)
            step = v * rng.uniform(0.3, 1.0) * np.array([np.cos(heading), np.sin(heading)])
            nxt = centre + step
            for axis, lim in enumerate((w, h)):
                if not 0.05 * lim <= nxt[axis] <= 0.95 * lim:
                    step[axis] = -step[axis]
                    heading = float(np.arctan2(step[1], step[0]))
            centre = np.clip(centre + step, [0.05 * w, 0.05 * h], [0.95 * w, 0.95 * h])

    def draw(self, canvas: np.ndarray, t: int) -> np.ndarray | None:
        """Alpha-blend frame t's view onto `canvas` (float32 HxWx3); returns its xyxy box or None if off-frame."""
        lin, centre, gain = self.frames[t]
        m = np.zeros((2, 3), np.float32)
        m[:, :2] = lin
        m[:, 2] = lin @ self.base[:, 2] + centre
        h, w = canvas.shape[:2]
        ph, pw = self.alpha.shape
        corners = np.array([[0, 0, 1], [pw, 0, 1], [0, ph, 1], [pw, ph, 1]], np.float32) @ m.T
        x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int) - 1, 0)
        x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int) + 1, [w, h])
        if x1 <= x0 or y1 <= y0:
            return None
        m[:, 2] -= [x0, y0]  # warp only the region the patch lands in
        size = (int(x1 - x0), int(y1 - y0))
        alpha = cv2.warpAffine(self.alpha, m, size, flags=cv2.INTER_LINEAR, borderValue=0)
        boxed = alpha if self.part is None else cv2.warpAffine(self.part, m, size, flags=cv2.INTER_LINEAR,
                                                               borderValue=0)
        ys, xs = np.nonzero(boxed > 0.5)
        if not len(xs):
            return None
        source = self.patch if self.patch2 is None else self.patch * (1 - self.mix[t]) + self.patch2 * self.mix[t]
        patch = cv2.warpAffine(source, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        a = alpha[..., None]
        view = canvas[y0:y1, x0:x1]
        view *= 1 - a
        view += a * np.clip(patch * gain, 0, 255)
        xs, ys = xs + x0, ys + y0
        return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)


def generate_photo_sequence(rng: np.random.Generator, library: tuple[np.ndarray, ...], num_frames: int = 24,
                            hold: float = 0.0, part: float = 0.0) -> PhotoSequence:
    """One clip: target cut-out + distractors + occluder over a drifting photo background.

    With probability `hold` the target is a "face or hand-held object": large-ish, nearly still (slow drift,
    hand-held jitter) while it tilts, turns and changes appearance, so a tracker learns to stay put when the
    target barely moves rather than jump to something that looks more like the template. With probability
    `part` the target is part of a bigger pasted thing (`_part_cutout`: a face on a head and body).
    """
    w, h = [(320, 240), (400, 300), (480, 360), (360, 360), (480, 270)][int(rng.integers(5))]
    n = num_frames
    held = hold > 0 and rng.random() < hold
    # background: a crop that drifts (camera pan / zoom) over a larger view of one photo
    bg_img = library[int(rng.integers(len(library)))]
    big = _random_crop(rng, bg_img, int(w * 1.3), int(h * 1.3), float(np.exp(rng.uniform(0, 1.0))))
    pan = np.cumsum(rng.normal(0, rng.uniform(0, 1.5), (n, 2)), 0) + np.array([0.15 * w, 0.15 * h])
    pan = np.clip(pan, 0, [0.3 * w - 1, 0.3 * h - 1])
    speed = float(rng.choice([0.004, 0.01, 0.02, 0.03], p=[0.3, 0.4, 0.22, 0.08]))
    size = int(np.clip(np.exp(rng.uniform(np.log(18), np.log(0.55 * min(w, h)))), 14, 0.6 * min(w, h)))
    other_speed = speed
    if held:
        speed = float(rng.choice([0.0, 0.001, 0.003, 0.006]))
        size = int(rng.uniform(0.2, 0.5) * min(w, h))
    part_alpha = None
    if part > 0 and rng.random() < part:
        patch, alpha, part_alpha = _part_cutout(rng, library, size)
    else:
        patch, alpha = _cutout(rng, library, size)
    if rng.random() < 0.1:  # low-contrast targets: the cut-out taken from the background photo itself
        patch = _random_crop(rng, bg_img, alpha.shape[1], alpha.shape[0], float(np.exp(rng.uniform(0, 1.5))))
        patch = patch.astype(np.float32)
    target = _Mover(rng, patch, alpha, n, w, h, speed, hold=held, part=part_alpha)
    others: list[_Mover] = []
    for _ in range(int(rng.choice(4, p=[0.3, 0.35, 0.25, 0.1]))):  # look-alikes and other objects
        if rng.random() < 0.5:
            tint = rng.uniform(0.75, 1.25, 3).astype(np.float32)
            p, a = np.clip(patch * tint, 0, 255), alpha
        else:
            p, a = _cutout(rng, library, int(size * np.exp(rng.uniform(-0.5, 0.5))))
        others.append(_Mover(rng, p, a, n, w, h, other_speed * rng.uniform(0.5, 1.5)))
    occluder = None
    if rng.random() < 0.35:
        op, oa = _cutout(rng, library, int(size * rng.uniform(0.5, 1.2)))
        occluder = _Mover(rng, op, oa, n, w, h, other_speed * 2.5,
                          centre=np.array(target.frames[n // 2][1]) + rng.normal(0, size, 2))
    blur = rng.random() < 0.25
    noise = float(rng.uniform(2, 8)) if rng.random() < 0.3 else 0.0
    jpeg = int(rng.integers(30, 90)) if rng.random() < 0.4 else 0
    frames, boxes = [], np.full((n, 4), np.nan)
    for t in range(n):
        x, y = pan[t].astype(int)
        canvas = big[y:y + h, x:x + w].astype(np.float32)
        for o in others:
            o.draw(canvas, t)
        box = target.draw(canvas, t)
        if occluder is not None:
            occluder.draw(canvas, t)
        if blur and rng.random() < 0.5:
            k = int(rng.choice([3, 5]))
            canvas = cv2.GaussianBlur(canvas, (k, k), 0)
        if noise:
            canvas += rng.standard_normal(canvas.shape, dtype=np.float32) * noise
        frame = np.clip(canvas, 0, 255).astype(np.uint8)
        if jpeg:
            ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, jpeg])
            frame = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if ok else frame
        frames.append(np.ascontiguousarray(frame))
        if box is not None:
            box = np.clip(box, 0, [w, h, w, h])
            if np.all(box[2:] - box[:2] >= 4):
                boxes[t] = [box[0], box[1], box[2] - box[0], box[3] - box[1]]
    return PhotoSequence(frames, boxes)


class PhotoPool:
    """A rolling pool of photo sequences, slot/step -> sequence id in closed form (as `SyntheticPool`)."""

    def __init__(self, options: object, seed: int) -> None:
        self.options = options
        self.seed = seed
        self.library = load_library(options.root)  # type: ignore[attr-defined]
        self._slots: dict[int, tuple[int, PhotoSequence]] = {}

    def sequence_id(self, slot: int, step: int) -> int:
        pool, every = self.options.pool_size, max(self.options.refresh_every, 1)  # type: ignore[attr-defined]
        refreshes = step // every if self.options.refresh_every > 0 else 0  # type: ignore[attr-defined]
        hits = 0 if refreshes <= slot else (refreshes - 1 - slot) // pool + 1
        return slot + pool * hits

    def get(self, slot: int, step: int) -> PhotoSequence:
        seq_id = self.sequence_id(slot, step)
        cached = self._slots.get(slot)
        if cached is None or cached[0] != seq_id:
            rng = np.random.default_rng([self.seed, 7, self.options.seed_offset, seq_id])  # type: ignore[attr-defined]
            extra = self.options.options  # type: ignore[attr-defined]
            cached = (seq_id, generate_photo_sequence(rng, self.library, self.options.num_frames,  # type: ignore[attr-defined]
                                                      float(extra.get("hold", 0.0)), float(extra.get("part", 0.0))))
            self._slots[slot] = cached
        return cached[1]

    def __len__(self) -> int:
        return self.options.pool_size  # type: ignore[attr-defined]


def write_held_out(root: str, out: str, seed: int, count: int, num_frames: int, hold: float = 0.0) -> None:
    """Held-out photo sequences (a seed stream the pool never uses) as GOT-10k folders: validation data."""
    library = load_library(root)
    for i in range(count):
        seq = generate_photo_sequence(np.random.default_rng([seed, 9, i]), library, num_frames, hold)
        folder = Path(out) / f"photo-{i:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        for t, frame in enumerate(seq.frames):
            cv2.imwrite(str(folder / f"{t + 1:08d}.jpg"), frame[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        lines = ["" if not np.all(np.isfinite(b)) else ",".join(f"{v:.1f}" for v in b) for b in seq.boxes]
        (folder / "groundtruth.txt").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="photo folder(s), ':'-separated")
    parser.add_argument("out", help="output folder for held-out sequences (GOT-10k layout)")
    parser.add_argument("--seed", type=int, default=424242)
    parser.add_argument("--count", type=int, default=12)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--hold", type=float, default=0.0, help="share of face-like / hand-held clips")
    args = parser.parse_args(argv)
    write_held_out(args.root, args.out, args.seed, args.count, args.frames, args.hold)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
