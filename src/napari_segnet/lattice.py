"""A permutohedral lattice (Adams, Baek & Davis 2010) in plain torch.

Fast approximate Gaussian filtering in a d-dimensional feature space (positions and
colours for the CRF's bilateral kernel): values are splatted onto the vertices of a
lattice whose size follows the image content, blurred along the lattice's d+1
directions, and sliced back.

The points are processed in chunks that stay in cache-sized memory. Sorting a chunk's
vertex codes gives its distinct vertices and, in the same order, its splatting
matrix. Splatting and slicing are then sparse matrix products (CSR), which run at
memory speed on the CPU and on a GPU, instead of scattered additions over every
point and vertex.
"""

from __future__ import annotations

import warnings

import torch

# Points per chunk: on the CPU small enough that temporaries are reused from cache;
# on a GPU large, as launches cost more than memory there.
_CHUNK = {"cpu": 2**16, "cuda": 2**22}
_TABLE_LIMIT = 2**20  # rank tuples tabulated at once (d = 5, RGB: 6**5 = 7776)


def _radix(span: torch.Tensor) -> torch.Tensor:
    one = torch.ones(1, dtype=torch.long, device=span.device)
    return torch.cumprod(torch.cat([one, span[:-1]]), 0)


def _csr(crow, col, val, shape) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "beta" notices of sparse CSR
        return torch.sparse_csr_tensor(crow, col, val, shape)


def _elevate(f: torch.Tensor) -> torch.Tensor:
    """Features ``(n, d)`` onto the hyperplane sum(x) = 0 in d+1 dimensions (linear)."""
    n, d = f.shape
    dev = f.device
    idx = torch.arange(d, device=dev, dtype=torch.float32)
    cf = f * ((2.0 / 3.0) ** 0.5 * (d + 1) / torch.sqrt((idx + 1) * (idx + 2)))
    out = torch.zeros(n, d + 1, device=dev)
    out[:, :d] = torch.flip(torch.cumsum(torch.flip(cf, [1]), 1), [1])
    out[:, 1:] -= torch.arange(1, d + 1, device=dev) * cf
    return out


def _simplex(f: torch.Tensor, lift: torch.Tensor):
    """Each point's enclosing simplex, computed in coordinate-major layout.

    ``lift`` is ``_elevate`` as a ``(d+1, d)`` matrix divided by d+1. Returns the
    remainder-0 corner's first d coordinates ``(d, n)`` (float, exact integers), the
    ranks ``(d+1, n)`` (float, exact integers in [0, d]) and the barycentric weights
    ``(n, d+1)``. Coordinate-major rows are contiguous, so the few-element
    comparisons below run as whole-row operations instead of a sort per point.
    """
    d1 = lift.shape[0]
    d = d1 - 1
    elevated = lift @ f.T  # elevated / (d+1)
    rd = torch.round(elevated)
    diff = elevated.sub_(rd)
    # Rank of each coordinate's remainder, descending, ties by position (a stable
    # sort), counted pairwise; plus the coordinate sum, then wrapped into [0, d].
    # Start as if every earlier coordinate ranked after every later one; each pair
    # where the earlier one is ahead moves one rank from it to the later one.
    rank = rd.sum(0) + torch.arange(d, -1, -1, device=f.device, dtype=f.dtype)[:, None]
    for j in range(1, d1):
        for k in range(j):
            ahead = (diff[k] >= diff[j]).float()
            rank[j] += ahead
            rank[k] -= ahead
    wrapped = torch.remainder(rank, d1)
    # A point below (above) its simplex moves its remainder-0 corner up (down) by
    # d+1 in that coordinate.
    shift = wrapped - rank
    v = diff.sub_(shift, alpha=1.0 / d1)
    base = rd[:d].mul_(d1).add_(shift[:d])
    # Barycentric weights: v goes to position d - rank (a permutation), and each
    # weight is the difference of neighbouring positions.
    # (Point-major from here on: that is the layout slicing needs.)
    at = v.new_empty(v.shape[::-1]).scatter_(1, (d - wrapped).T.long(), v.T)
    bary = torch.empty_like(at)
    bary[:, 1:] = at[:, 1:] - at[:, :-1]
    bary[:, 0] = at[:, 0] + 1.0 - at[:, d]
    return base, wrapped, bary


class PermutohedralLattice:
    """Lattice for features ``(N, d)`` already divided by the kernel's standard deviations.

    ``lattice.filter(values)`` returns ``(N, C)``: approximately, for each point i,
    sum over j of exp(-|f_i - f_j|^2 / 2) * values_j (up to a constant factor, which
    the CRF's normalisation cancels).
    """

    def __init__(self, features: torch.Tensor):
        f = features.float()
        n, d = f.shape
        dev = f.device
        self.n, self.d = n, d
        d1 = d + 1
        # Key bounds from the features' bounding box (elevation is linear): a vertex
        # key lies within 1.5(d+1) + d of an elevated point, and its neighbours a
        # further d, so margins of 3(d+1) + d hold them all.
        lift = _elevate(torch.eye(d, device=dev))  # (d, d+1)
        fmin, fmax = f.min(0).values[:, None], f.max(0).values[:, None]
        emin = torch.minimum(lift * fmin, lift * fmax).sum(0)[:d]
        emax = torch.maximum(lift * fmin, lift * fmax).sum(0)[:d]
        self._lo = (torch.floor(emin / d1).long() - 3) * d1 - d
        self._hi = (torch.ceil(emax / d1).long() + 3) * d1 + d
        span = self._hi - self._lo + 1
        if float(span.double().prod()) >= 2.0**62:
            raise ValueError("feature range too large for the lattice; scale the features")
        self._radix = _radix(span)
        code_type = torch.int32 if float(span.double().prod()) < 2.0**31 else torch.long
        # Offset of corner k from a point's remainder-0 corner, per tuple of ranks.
        r = torch.arange(d1, device=dev)
        canon = torch.where(r[None, :] <= d - r[:, None], r[:, None], r[:, None] - d1)
        if d1**d <= _TABLE_LIMIT:
            # Every tuple of d ranks, the last rank varying fastest.
            count = torch.arange(d1**d, device=dev)
            tuples = torch.stack([count // d1 ** (d - 1 - j) % d1 for j in range(d)], 1)
            table = (canon[:, tuples.flip(1)] * self._radix).sum(-1).T  # (d1**d, d1)
            digit = (d1 ** torch.arange(d, device=dev)).float()
        # Per chunk: codes of the d+1 corners of every point, sorted.
        lift_t = (lift.T / d1).contiguous()
        size = _CHUNK.get(dev.type, 2**20)
        chunks = [(a, min(a + size, n)) for a in range(0, n, size)]
        parts = []
        for a, b in chunks:
            base, rank, bary = _simplex(f[a:b], lift_t)
            base = base.long().sub_(self._lo[:, None]).mul_(self._radix[:, None]).sum(0)
            if d1**d <= _TABLE_LIMIT:
                codes = table[(rank[:d] * digit[:, None]).sum(0).long()].add_(base[:, None])
            else:
                codes = base[:, None].expand(b - a, d1).clone()
                for j in range(d):
                    codes += canon[:, rank[j].long()].T * self._radix[j]
            del base, rank
            flat = bary.reshape(-1)
            parts.append((flat, *_group(codes.reshape(-1).to(code_type))))
        # All distinct vertices; each chunk's splatting and slicing matrices.
        vertex_codes = torch.unique(torch.cat([p[1] for p in parts]))
        self.vertex_codes = vertex_codes.long()
        self.m = len(vertex_codes)
        self._chunks = []
        for (a, b), (flat, vc, counts, entry, distinct) in zip(chunks, parts):
            ids = torch.searchsorted(vertex_codes, vc)
            per_vertex = torch.zeros(self.m + 1, dtype=torch.long, device=dev)
            per_vertex[ids + 1] = counts
            point = torch.div(entry, d1, rounding_mode="floor")
            splat = _csr(per_vertex.cumsum(0), point, flat.index_select(0, entry), (self.m, b - a))
            # Each entry's vertex, back in point order (a scatter of the sorted order).
            col = torch.empty_like(entry).scatter_(0, entry, ids.index_select(0, distinct))
            crow = torch.arange(0, (b - a) * d1 + 1, d1, device=dev)
            self._chunks.append((a, b, splat, _csr(crow, col, flat, (b - a, self.m))))
        del parts
        # Neighbours of every vertex along each lattice direction, as indices into a
        # grid whose row 0 is zero (no vertex there). Encoding is linear, so a step
        # moves every code by the same amount; the key bounds' margins keep every
        # neighbour's key inside them, so codes never alias.
        total = self._radix.sum()
        self.neighbours = []
        for k in range(d1):
            delta = d1 * self._radix[k] - total if k < d else -total
            self.neighbours.append(
                (self._find(self.vertex_codes + delta), self._find(self.vertex_codes - delta))
            )

    def _find(self, codes: torch.Tensor) -> torch.Tensor:
        """Index of each code among the vertices plus one (0 where there is no vertex)."""
        pos = torch.searchsorted(self.vertex_codes, codes).clamp_(max=self.m - 1)
        found = self.vertex_codes.index_select(0, pos) == codes
        return torch.where(found, pos + 1, torch.zeros_like(pos))

    def filter(self, values: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Gaussian-filter ``(N, C)`` values in feature space (into ``out`` if given)."""
        c = values.shape[1]
        grid = torch.zeros(self.m + 1, c, device=values.device, dtype=values.dtype)
        inner = grid[1:]
        for a, b, splat, _ in self._chunks:
            inner += splat @ values[a:b]
        for n1, n2 in self.neighbours:
            blurred = grid.index_select(0, n1).add_(grid.index_select(0, n2)).mul_(0.5)
            grid = torch.cat([grid[:1], blurred.add_(grid[1:])])
        inner = grid[1:]
        if out is None:
            out = torch.empty(self.n, c, device=values.device, dtype=values.dtype)
        for a, b, _, slice_ in self._chunks:
            torch.mm(slice_, inner, out=out[a:b])
        return out


def _group(codes: torch.Tensor):
    """Sort one chunk's vertex codes: distinct codes, their counts, the sorting order,
    and, in that order, each entry's index among the distinct codes."""
    sorted_codes, entry = torch.sort(codes)
    new = torch.ones(len(codes), dtype=torch.bool, device=codes.device)
    new[1:] = sorted_codes[1:] != sorted_codes[:-1]
    starts = torch.nonzero(new).squeeze(1)
    counts = torch.diff(starts, append=torch.tensor([len(codes)], device=codes.device))
    return sorted_codes.index_select(0, starts), counts, entry, torch.cumsum(new, 0) - 1
