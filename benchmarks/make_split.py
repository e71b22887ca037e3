"""Fixed train/validation split of the DSB 2018 nuclei images, by image, per modality.

Run: python benchmarks/make_split.py --data ../shared/data/dsb2018
     [--out benchmarks/dsb2018_split.csv]

Writes one row per image: ``id, modality, split, group`` (split is ``train`` or ``val``).
Training scripts train on ``train`` only; benchmarks report ``val``.

The rule, in order:

1. **Groups of look-alike images.** Images of one experiment look alike (same microscope,
   same size, same staining and exposure), and one of them in train and another in val would
   make validation too easy. Two images are *linked* when they have the same modality, height,
   width and number of channels, and every one of these coarse statistics agrees within
   ``--tol`` (default 0.1) on a log2 scale, i.e. within about 7 %: the median, the 99th
   percentile and the standard deviation of the grey image (the mean over channels), and for
   colour images also the mean of each channel, all taken as ``log2(1 + value)``. A group is a
   connected set of linked images (single linkage), so a chain of look-alikes stays together.
   This is cheap and catches experiments that differ in size or exposure; it cannot separate
   two experiments that happen to share size and intensity statistics, which then simply fall
   into one group (harmless: they stay on one side).
2. **Per modality, whole groups to val.** The target is ``round(--val-fraction * n)`` images
   (default 15 %), at least ``--min-val`` (default 3). Groups are taken in an order shuffled
   with ``--seed`` (default 0); a group goes to val if it does not push the val count past the
   target, until the target is reached. Groups larger than the target therefore stay in train.
3. **Fallback when whole groups cannot reach the minimum.** If a modality's val count is still
   below ``--min-val`` after step 2 (the brightfield images: 14 images of one size and almost
   one look, which form a group of 13 and a single image), the remaining images are taken one
   by one, in the seeded order, from the groups not yet in val. Such a group straddles the
   split, and the modality's val score is then optimistic; the script prints which groups
   were split, and they are marked ``<group>*`` in the file.

The output is deterministic for a given data folder and options (no dependence on file
system order: images are sorted by id before anything is drawn).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import tifffile
from scipy.sparse.csgraph import connected_components


def image_features(path: Path) -> np.ndarray:
    """log2(1 + statistic): grey median, 99th percentile, std; per-channel means if colour."""
    im = tifffile.imread(path).astype(np.float64)
    grey = im.mean(-1) if im.ndim == 3 else im
    f = [np.median(grey), np.percentile(grey, 99), grey.std()]
    if im.ndim == 3:
        f += list(im.reshape(-1, im.shape[-1]).mean(0))
    return np.log2(1.0 + np.asarray(f))


def read_index(data: Path) -> list[dict]:
    with open(data / "index.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return sorted(rows, key=lambda r: r["id"])


def make_groups(data: Path, rows: list[dict], tol: float) -> list[str]:
    """A group name per row: ``modality_HxWxC_k`` with k numbering the look-alike sets."""
    keys: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        k = (r["modality"], int(r["height"]), int(r["width"]), int(r["channels"]))
        keys.setdefault(k, []).append(i)
    groups = [""] * len(rows)
    for k, idx in sorted(keys.items()):
        feats = np.stack([image_features(data / "images" / f"{rows[i]['id']}.tif") for i in idx])
        linked = np.abs(feats[:, None] - feats[None]).max(-1) < tol
        _, lab = connected_components(linked, directed=False)
        for i, g in zip(idx, lab):
            groups[i] = f"{k[0]}_{k[1]}x{k[2]}x{k[3]}_{g}"
    return groups


def assign(
    rows: list[dict], groups: list[str], frac: float, min_val: int, seed: int
) -> tuple[list[str], list[str]]:
    """Split per row and the names of groups that had to be split (fallback)."""
    rng = np.random.default_rng(seed)
    split = ["train"] * len(rows)
    broken: list[str] = []
    for mod in sorted({r["modality"] for r in rows}):
        idx = [i for i, r in enumerate(rows) if r["modality"] == mod]
        target = max(min_val, round(frac * len(idx)))
        members: dict[str, list[int]] = {}
        for i in idx:
            members.setdefault(groups[i], []).append(i)
        names = sorted(members)
        order = [names[j] for j in rng.permutation(len(names))]
        n_val = 0
        for g in order:
            if n_val >= target:
                break
            if n_val + len(members[g]) <= target:
                for i in members[g]:
                    split[i] = "val"
                n_val += len(members[g])
        if n_val < min_val:
            rest = [i for g in order for i in members[g] if split[i] == "train"]
            for j in rng.permutation(len(rest))[: min_val - n_val]:
                split[rest[j]] = "val"
                if groups[rest[j]] not in broken:
                    broken.append(groups[rest[j]])
    return split, broken


def main() -> None:
    a = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    a.add_argument("--data", type=Path, required=True, help="the dsb2018 folder")
    a.add_argument("--out", type=Path, default=Path(__file__).with_name("dsb2018_split.csv"))
    a.add_argument("--val-fraction", type=float, default=0.15)
    a.add_argument("--min-val", type=int, default=3)
    a.add_argument("--tol", type=float, default=0.1)
    a.add_argument("--seed", type=int, default=0)
    args = a.parse_args()

    rows = read_index(args.data)
    groups = make_groups(args.data, rows, args.tol)
    split, broken = assign(rows, groups, args.val_fraction, args.min_val, args.seed)
    with open(args.out, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["id", "modality", "split", "group"])
        for r, s, g in zip(rows, split, groups):
            w.writerow([r["id"], r["modality"], s, g + ("*" if g in broken else "")])

    print(f"wrote {args.out}")
    print("| modality | groups | train images | train objects | val images | val objects |")
    print("|---|---:|---:|---:|---:|---:|")
    for mod in sorted({r["modality"] for r in rows}):
        idx = [i for i, r in enumerate(rows) if r["modality"] == mod]
        n = {s: sum(split[i] == s for i in idx) for s in ("train", "val")}
        o = {s: sum(int(rows[i]["objects"]) for i in idx if split[i] == s) for s in n}
        ng = len({groups[i] for i in idx})
        print(f"| {mod} | {ng} | {n['train']} | {o['train']} | {n['val']} | {o['val']} |")
    for g in broken:
        print(f"group {g} straddles the split (too few whole groups for --min-val)")


if __name__ == "__main__":
    main()
