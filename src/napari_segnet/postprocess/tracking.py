"""Time-lapse ids: one id per object across frames, by overlap between consecutive frames.

Each frame's objects are matched to the previous frame's by their intersection over
union (IoU), one to one, maximising the summed IoU with
:func:`scipy.optimize.linear_sum_assignment`; a match needs ``min_iou``. A matched
object takes its predecessor's id, an unmatched one a new id.

Limits: this links frame to frame only. A dividing cell keeps its id in one
daughter and the other gets a new one (no lineage); an object missing from one
frame gets a new id when it comes back (no gap closing); objects that move more
than about their own radius between frames overlap too little to be linked.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import connected_components

from .. import checks
from ..errors import SegNetError

__all__ = ["link_over_time"]


def link_over_time(labels, min_iou: float = 0.1, *, axis: int = 0) -> np.ndarray:
    """Relabel instance labels so that each object keeps its id from frame to frame.

    Parameters
    ----------
    labels : array-like
        Integer instance ids (0 = background) with a time axis: ``(T, Y, X)`` or
        ``(T, Z, Y, X)``. Ids may repeat or not between frames; they are replaced.
        Never modified.
    min_iou : float
        Smallest IoU (0 to 1, exclusive of 0) for two objects of consecutive frames
        to be the same object.
    axis : int
        The time axis.

    Returns
    -------
    numpy.ndarray
        int32 (int64 when needed) labels of the same shape: the first frame's objects
        numbered 1..n in the order of their ids, later objects their predecessor's id
        or the next unused one.

    Raises
    ------
    SegNetError
        For labels that are not integers, have fewer than 3 axes, or a bad
        ``min_iou`` or ``axis``.
    """
    labels = checks.array(labels, "labels")
    if np.dtype(labels.dtype).kind not in "iu":
        raise SegNetError(f"labels must be integer instance ids, not dtype {labels.dtype}")
    min_iou = checks.number("min_iou", min_iou, low=0, high=1, low_open=True)
    ndim = len(labels.shape)
    if ndim < 3:
        raise SegNetError(
            f"labels have {ndim} axes; link_over_time needs a time axis and 2 or 3 more"
        )
    axis = checks.integer("axis", axis, low=-ndim, high=ndim - 1)
    frames = np.moveaxis(np.asarray(labels), axis, 0)
    out = np.zeros(frames.shape, np.int64)
    prev = None
    next_id = 1
    for t in range(frames.shape[0]):
        cur = frames[t]
        ids = np.unique(cur)
        ids = ids[ids > 0]
        new = np.zeros(len(ids), np.int64)  # track id per object of this frame
        if prev is not None and len(ids):
            for i, j in _matches(prev, cur, ids, min_iou):
                new[j] = i
        for j in np.flatnonzero(new == 0):
            new[j] = next_id
            next_id += 1
        lut_index = np.searchsorted(ids, cur)
        found = cur > 0
        out[t][found] = new[lut_index[found]]
        prev = out[t]
    dtype = np.int32 if next_id <= np.iinfo(np.int32).max else np.int64
    return np.moveaxis(out.astype(dtype, copy=False), 0, axis)


def _matches(prev: np.ndarray, cur: np.ndarray, ids: np.ndarray, min_iou: float):
    """``(track id, index into ids)`` pairs: the one-to-one matching of largest summed IoU.

    Only objects that overlap are compared; the overlap graph is split into its
    connected parts and each part is assigned on its own, so the cost matrices stay
    small however many objects a frame holds.
    """
    both = (prev > 0) & (cur > 0)
    if not both.any():
        return []
    p_ids, p_area = np.unique(prev[prev > 0], return_counts=True)
    c_area = np.bincount(np.searchsorted(ids, cur[cur > 0]), minlength=len(ids))
    pairs, inter = np.unique(
        np.stack([np.searchsorted(p_ids, prev[both]), np.searchsorted(ids, cur[both])]),
        axis=1,
        return_counts=True,
    )
    pi, ci = pairs
    iou = inter / (p_area[pi] + c_area[ci] - inter)
    keep = iou >= min_iou
    pi, ci, iou = pi[keep], ci[keep], iou[keep]
    if not len(iou):
        return []
    # Bipartite graph: previous objects 0..P-1, current ones P..P+C-1.
    n_p, n_c = len(p_ids), len(ids)
    graph = sparse.coo_matrix((iou, (pi, ci + n_p)), shape=(n_p + n_c, n_p + n_c))
    _, part = connected_components(graph, directed=False)
    out = []
    edge_part = part[pi]
    for k in np.unique(edge_part):
        sel = edge_part == k
        rows, r_inv = np.unique(pi[sel], return_inverse=True)
        cols, c_inv = np.unique(ci[sel], return_inverse=True)
        score = np.zeros((len(rows), len(cols)))
        score[r_inv, c_inv] = iou[sel]
        r, c = linear_sum_assignment(score, maximize=True)
        for a, b in zip(r, c):
            if score[a, b] >= min_iou:
                out.append((int(p_ids[rows[a]]), int(cols[b])))
    return out
