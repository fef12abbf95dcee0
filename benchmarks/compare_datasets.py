"""Compare two extracted dataset folders (`<output>/dataset`): labels, truth and summary.json must
be byte-identical; images are compared byte for byte, and decoded when they differ (largest and
mean absolute pixel difference). Exit status 1 when a label, truth or summary file differs.

    .venv/bin/python benchmarks/compare_datasets.py BEFORE/dataset AFTER/dataset
    .venv/bin/python benchmarks/compare_datasets.py A B --ignore-counts  # cold against warm

`--ignore-counts` leaves out of summary.json what differs between a cold and a warm run of the
same extraction (`images_downloaded`, `images_from_cache`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

COUNTS = ("images_downloaded", "images_from_cache")


def files(root: Path, folder: str) -> dict[str, Path]:
    base = root / folder
    return {str(p.relative_to(base)): p for p in sorted(base.rglob("*")) if p.is_file()}


def summary_text(path: Path, ignore_counts: bool) -> bytes:
    content = path.read_bytes()
    if not ignore_counts:
        return content
    summary = json.loads(content)
    for split in summary["splits"].values():
        for key in COUNTS:
            split.pop(key, None)
    return json.dumps(summary, indent=2, ensure_ascii=False).encode()


def compare_text(a: Path, b: Path, folder: str) -> list[str]:
    left, right = files(a, folder), files(b, folder)
    problems = [f"{folder}/{name}: only in {a}" for name in left.keys() - right.keys()]
    problems += [f"{folder}/{name}: only in {b}" for name in right.keys() - left.keys()]
    problems += [
        f"{folder}/{name}: differs"
        for name in sorted(left.keys() & right.keys())
        if left[name].read_bytes() != right[name].read_bytes()
    ]
    print(f"{folder}: {len(left)} / {len(right)} files, {len(problems)} differences")
    return problems


def compare_images(a: Path, b: Path) -> list[str]:
    left, right = files(a, "images"), files(b, "images")
    common = sorted(left.keys() & right.keys())
    problems = [f"images/{name}: only in one" for name in left.keys() ^ right.keys()]
    different = [n for n in common if left[n].read_bytes() != right[n].read_bytes()]
    largest, means = 0, []
    for name in different:
        x = np.asarray(Image.open(left[name]).convert("RGB"), dtype=np.int16)
        y = np.asarray(Image.open(right[name]).convert("RGB"), dtype=np.int16)
        if x.shape != y.shape:
            problems.append(f"images/{name}: {x.shape} against {y.shape}")
            continue
        diff = np.abs(x - y)
        largest = max(largest, int(diff.max()))
        means.append(float(diff.mean()))
    mean = f"{np.mean(means):.3f}" if means else "-"
    print(
        f"images: {len(common)} in both, {len(common) - len(different)} byte-identical, "
        f"{len(different)} differ (largest pixel difference {largest}, mean of the means {mean})"
    )
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--ignore-counts", action="store_true")
    parser.add_argument("--no-images", action="store_true")
    args = parser.parse_args()
    problems = compare_text(args.a, args.b, "labels") + compare_text(args.a, args.b, "truth")
    left = summary_text(args.a / "summary.json", args.ignore_counts)
    right = summary_text(args.b / "summary.json", args.ignore_counts)
    same = left == right
    print(f"summary.json: {'identical' if same else 'DIFFERS'}")
    problems += [] if same else ["summary.json differs"]
    image_problems = [] if args.no_images else compare_images(args.a, args.b)
    for problem in problems + image_problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
