"""Gather the real photographs and videos the default model is trained and evaluated on, offline.

    python -m lorat_train.gather [--cache ~/.cache/lorat-data]

Debian packages ship real pictures: desktop backgrounds and OpenCV's sample data. Each package is fetched
with `apt-get download` (no root, nothing installed) and unpacked with `dpkg -x` under `CACHE/pkgs/`; the
photos used for training are linked into `CACHE/photos/<package>/` and listed with their package version
and licence in `CACHE/photos/SOURCES.json`. OpenCV's sample videos (`vtest.avi`, `Megamind.avi`,
`tree.avi`) are the real evaluation footage (bench/data/real/): they are never linked into `photos/`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path

# package -> (folder inside the package, licence summary from its debian/copyright)
PACKAGES = {
    "gnome-backgrounds": ("usr/share/backgrounds/gnome", "CC-BY-SA-3.0 (debian/copyright)"),
    "mate-backgrounds": ("usr/share/backgrounds/mate", "GPL-2+; Ubuntu-MATE images CC-BY-SA-4.0 (debian/copyright)"),
    "sway-backgrounds": ("usr/share/backgrounds/sway", "Expat (debian/copyright, Files: *)"),
    "plasma-workspace-wallpapers": ("usr/share/wallpapers", "GPL-2+ (debian/copyright, Files: *)"),
    "opencv-doc": ("usr/share/doc/opencv-doc/examples/data",
                   "Apache-2.0 AND BSD-3-Clause (debian/copyright, Files: *)"),
}
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
# OpenCV sample files that are drawings, charts or text rather than photographs
OPENCV_SKIP = ("chessboard", "digits", "notes", "sudoku", "alphabet", "text", "gradient", "ellipses", "mask",
               "logo", "detect_blob", "pic", "ml.png", "imagetext", "board", "cards", "shape", "aloegt", "data01",
               "letter", "h1to3p", "left", "right", "gt")
VIDEOS = ("vtest.avi", "Megamind.avi", "tree.avi")


def fetch(package: str, cache: Path) -> tuple[Path, str]:
    """apt-get download + dpkg -x (skipped when already unpacked); returns (unpack dir, version)."""
    debs, root = cache / "debs", cache / "pkgs" / package
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if not found:
        subprocess.run(["apt-get", "download", package], cwd=debs, check=True, stdout=subprocess.DEVNULL)
        found = sorted(debs.glob(f"{package}_*.deb"))
    deb = found[-1]
    if not root.is_dir():
        subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    return root, deb.name.split("_")[1].replace("%3a", ":")


def select(package: str, folder: Path) -> list[Path]:
    """The photos of one package: every picture, but one size per Plasma wallpaper, no OpenCV drawings."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file())
    if package == "plasma-workspace-wallpapers":
        best: dict[str, Path] = {}
        for p in files:  # wallpapers/<Name>/contents/images/<W>x<H>.jpg: keep the one nearest 1920 wide
            name = p.relative_to(folder).parts[0]
            width = int(p.stem.split("x")[0]) if p.stem.split("x")[0].isdigit() else 0
            cur = best.get(name)
            if cur is None or abs(width - 1920) < abs(int(cur.stem.split("x")[0] or 0) - 1920):
                best[name] = p
        files = sorted(best.values())
    if package == "opencv-doc":
        files = [p for p in files if p.parent == folder and not p.name.lower().startswith(OPENCV_SKIP)]
    return files


def gather(cache: Path) -> dict:
    photos = cache / "photos"
    record: dict = {"packages": {}, "videos": {}}
    for package, (inner, licence) in PACKAGES.items():
        root, version = fetch(package, cache)
        chosen = select(package, root / inner)
        out = photos / package
        out.mkdir(parents=True, exist_ok=True)
        for i, p in enumerate(chosen):
            link = out / f"{i:03d}-{p.parent.name}-{p.name}"
            if not link.exists():
                os.symlink(p, link)
        record["packages"][package] = {"version": version, "photos": len(chosen), "licence": licence,
                                       "copyright": str(root / "usr/share/doc" / package / "copyright")}
        if package == "opencv-doc":
            for name in VIDEOS:
                record["videos"][name] = str(root / inner / name)
    (photos / "SOURCES.json").write_text(json.dumps(record, indent=1))
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", default=os.environ.get("LORAT_DATA", "~/.cache/lorat-data"))
    args = parser.parse_args(argv)
    record = gather(Path(args.cache).expanduser())
    for name, info in record["packages"].items():
        print(f"{name} {info['version']}: {info['photos']} photos ({info['licence']})")
    print(f"photos in {Path(args.cache).expanduser() / 'photos'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
