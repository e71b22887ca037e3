"""Scores: instance average precision (matching by IoU) and mean IoU of classes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import SegNetError


def iou_matrix(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU between every ground-truth object (rows) and predicted object (columns).

    Ids are made sequential first; row/column 0 (background) is dropped.
    """
    from skimage.segmentation import relabel_sequential

    g = relabel_sequential(np.asarray(gt).astype(np.int64, copy=False))[0].ravel()
    p = relabel_sequential(np.asarray(pred).astype(np.int64, copy=False))[0].ravel()
    ng, npred = int(g.max()) + 1, int(p.max()) + 1
    inter = np.bincount(g * npred + p, minlength=ng * npred).reshape(ng, npred)
    area_g = inter.sum(1, keepdims=True)
    area_p = inter.sum(0, keepdims=True)
    union = area_g + area_p - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    return iou[1:, 1:]


def average_precision(
    gt: np.ndarray, pred: np.ndarray, thresholds: float | Sequence[float] = 0.5
) -> float | np.ndarray:
    """Instance average precision TP / (TP + FP + FN) at IoU thresholds (DSB 2018 style).

    For thresholds of 0.5 and above a match is unique (an object cannot overlap two
    others by more than half), so matches are the pairs with IoU above the threshold.

    Parameters
    ----------
    gt, pred : numpy.ndarray
        Instance labels of the same shape, 0 = background.
    thresholds : float or sequence of float
        IoU thresholds, each at least 0.5.

    Returns
    -------
    float or numpy.ndarray
        One score per threshold (1.0 when both are empty).
    """
    if np.shape(gt) != np.shape(pred):
        raise SegNetError(
            f"shapes differ: {np.shape(gt)} vs {np.shape(pred)}; compare labels of the same image"
        )
    ts = np.atleast_1d(np.asarray(thresholds, float))
    if (ts < 0.5).any():
        raise SegNetError(
            f"IoU thresholds must be at least 0.5 (for unique matches), not {ts.min():g}"
        )
    iou = iou_matrix(gt, pred)
    n_g, n_p = iou.shape
    out = []
    for t in ts:
        tp = int((iou > t).sum())
        denom = n_g + n_p - tp
        out.append(1.0 if denom == 0 else tp / denom)
    res = np.array(out)
    return float(res[0]) if np.isscalar(thresholds) else res


def mean_iou(gt: np.ndarray, pred: np.ndarray, n_classes: int, ignore: int | None = None) -> float:
    """Mean over classes present in ``gt`` or ``pred`` of the per-class IoU.

    Pixels where ``gt == ignore`` are left out.
    """
    g = np.asarray(gt).ravel().astype(np.int64)
    p = np.asarray(pred).ravel().astype(np.int64)
    if ignore is not None:
        keep = g != ignore
        g, p = g[keep], p[keep]
    if g.size == 0:
        return float("nan")
    cm = np.bincount(g * n_classes + p, minlength=n_classes * n_classes).reshape(
        n_classes, n_classes
    )
    inter = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - inter
    present = union > 0
    return float((inter[present] / union[present]).mean())
