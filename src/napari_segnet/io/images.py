"""Reading and writing images for the command line (TIFF, PNG/JPEG, zarr)."""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np

from ..errors import SegNetError

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")


def expand_inputs(specs: list[str]) -> tuple[list[Path], list[str]]:
    """Files, folders (their images) and glob patterns to a list of paths, plus problems."""
    from .ome_zarr import is_ome_zarr

    paths: list[Path] = []
    problems: list[str] = []
    for spec in specs:
        p = Path(spec)
        if (p.suffix == ".zarr" and p.exists()) or is_ome_zarr(p):
            paths.append(p)
        elif p.is_dir():
            found = sorted(
                q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES or q.suffix == ".zarr"
            )
            if not found:
                problems.append(f"{spec}: folder holds no images")
            paths.extend(found)
        elif p.exists():
            paths.append(p)
        else:
            matches = sorted(glob.glob(spec))
            if matches:
                paths.extend(Path(m) for m in matches)
            else:
                problems.append(f"{spec}: no such file, folder or pattern")
    return paths, problems


def read_image(path: str | Path):
    """Read a TIFF, PNG/JPEG or zarr array (lazily for zarr)."""
    p = Path(path)
    suffix = p.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            return tifffile.imread(p)
        if suffix == ".zarr":
            import zarr

            z = zarr.open(str(p), mode="r")
            if hasattr(z, "shape"):
                return z
            arrays = list(z.array_keys()) if hasattr(z, "array_keys") else []
            if not arrays:
                raise SegNetError(f"{p}: zarr group holds no arrays")
            return z[arrays[0]]
        from skimage.io import imread

        return imread(p)
    except SegNetError:
        raise
    except Exception as e:
        # Readers' messages can run over several lines of advice: the first says why.
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise SegNetError(f"{p}: cannot read image ({type(e).__name__}: {reason})") from None


def overlay_png(
    image: np.ndarray, instances: np.ndarray | None, semantic: np.ndarray
) -> np.ndarray:
    """An RGB preview: the image in grey with object outlines in colour (2D or a middle slice)."""
    from skimage.color import label2rgb
    from skimage.segmentation import find_boundaries

    img = np.asarray(image, dtype=np.float32)
    lab = instances if instances is not None else semantic
    while img.ndim > 2 and img.shape[-1] not in (3, 4):
        img = img[img.shape[0] // 2]
        lab = lab[lab.shape[0] // 2]
    while lab.ndim > 2:
        lab = lab[lab.shape[0] // 2]
    if img.ndim == 3:
        img = img[..., :3].mean(-1)
    lo, hi = np.percentile(img, [1, 99.8])
    grey = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = label2rgb(lab.astype(np.int64), image=grey, alpha=0.25, bg_label=0, image_alpha=1.0)
    edges = find_boundaries(lab, mode="inner")
    rgb[edges] = (1.0, 0.85, 0.0)
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)
