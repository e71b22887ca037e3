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

import itertools
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


def _simplex(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each point's enclosing simplex: remainder-0 corner (first d coordinates),
    ranks ``(n, d+1)`` and barycentric weights ``(n, d+1)``."""
    n, d = f.shape
    d1 = d + 1
    dev = f.device
    elevated = _elevate(f)
    # Closest remainder-0 point, and the rank of each coordinate's remainder
    # (descending; ties by position, as a stable sort).
    rd = torch.round(elevated / d1)
    total = rd.sum(1, keepdim=True).long()
    diff = elevated.sub_(rd * d1)
    order = torch.sort(diff, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(d1, device=dev).expand(n, d1))
    rank += total
    # Wrap ranks into [0, d]: a point below (above) its simplex moves its
    # remainder-0 point up (down) by d+1 in that coordinate.
    wrapped = torch.remainder(rank, d1)
    shift = wrapped - rank
    diff -= shift
    base = (rd[:, :d] * d1).long() + shift[:, :d]
    # Barycentric weights: v goes to position d - rank (a permutation), and each
    # weight is the difference of neighbouring positions.
    v = diff.div_(d1)
    at = torch.empty_like(v).scatter_(1, d - wrapped, v)
    bary = torch.empty_like(v)
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
        # Key bounds from the features' bounding box (elevation is linear): every
        # vertex key lies within d+1 of an elevated point, plus d for its corner.
        lift = _elevate(torch.eye(d, device=dev))  # (d, d+1)
        fmin, fmax = f.min(0).values[:, None], f.max(0).values[:, None]
        emin = torch.minimum(lift * fmin, lift * fmax).sum(0)[:d]
        emax = torch.maximum(lift * fmin, lift * fmax).sum(0)[:d]
        self._lo = (torch.floor(emin / d1).long() - 2) * d1 - d
        self._hi = (torch.ceil(emax / d1).long() + 2) * d1 + d
        span = self._hi - self._lo + 1
        if float(span.double().prod()) >= 2.0**62:
            raise ValueError("feature range too large for the lattice; scale the features")
        self._radix = _radix(span)
        code_type = torch.int32 if float(span.double().prod()) < 2.0**31 else torch.long
        # Offset of corner k from a point's remainder-0 corner, per tuple of ranks.
        r = torch.arange(d1, device=dev)
        canon = torch.where(r[None, :] <= d - r[:, None], r[:, None], r[:, None] - d1)
        if d1**d <= _TABLE_LIMIT:
            tuples = torch.tensor(list(itertools.product(range(d1), repeat=d)), device=dev)
            table = (canon[:, tuples.flip(1)] * self._radix).sum(-1).T  # (d1**d, d1)
            digit = d1 ** torch.arange(d, device=dev)
        # Per chunk: codes of the d+1 corners of every point, sorted.
        size = _CHUNK.get(dev.type, 2**20)
        chunks = [(a, min(a + size, n)) for a in range(0, n, size)]
        parts = []
        for a, b in chunks:
            base, rank, bary = _simplex(f[a:b])
            codes = self._encode(base)[:, None].expand(b - a, d1).clone()
            if d1**d <= _TABLE_LIMIT:
                codes += table[(rank[:, :d] * digit).sum(1)]
            else:
                for j in range(d):
                    codes += canon[:, rank[:, j]].T * self._radix[j]
            del base, rank
            parts.append((bary.reshape(-1), *_group(codes.reshape(-1).to(code_type))))
        # All distinct vertices; each chunk's splatting matrix and slicing columns.
        vertex_codes = torch.unique(torch.cat([p[1] for p in parts]))
        self.vertex_codes = vertex_codes.long()
        self.m = len(vertex_codes)
        self._splat, cols, weights = [], [], []
        for (a, b), (flat, vc, counts, entry, local) in zip(chunks, parts):
            ids = torch.searchsorted(vertex_codes, vc)
            per_vertex = torch.zeros(self.m + 1, dtype=torch.long, device=dev)
            per_vertex[ids + 1] = counts
            point = torch.div(entry, d1, rounding_mode="floor")
            self._splat.append(
                (a, b, _csr(per_vertex.cumsum(0), point, flat[entry], (self.m, b - a)))
            )
            cols.append(ids[local])
            weights.append(flat)
        del parts
        crow = torch.arange(0, n * d1 + 1, d1, device=dev)
        self._slice = _csr(crow, torch.cat(cols), torch.cat(weights), (n, self.m))
        # Neighbours of every vertex along each lattice direction (0: none).
        vkeys = self._decode(self.vertex_codes)
        self.neighbours = []
        for k in range(d1):
            step = torch.full((d,), -1, device=dev, dtype=torch.long)
            if k < d:
                step[k] = d
            self.neighbours.append((self._find(vkeys + step), self._find(vkeys - step)))

    def _encode(self, keys: torch.Tensor) -> torch.Tensor:
        return ((keys - self._lo) * self._radix).sum(-1)

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        out = []
        rest = codes
        span = torch.cat(
            [
                self._radix[1:] // self._radix[:-1],
                torch.ones(1, dtype=torch.long, device=codes.device),
            ]
        )
        for k in range(self.d):
            out.append(rest % span[k] if k < self.d - 1 else rest)
            rest = rest // span[k]
        return torch.stack(out, -1) + self._lo

    def _find(self, keys: torch.Tensor) -> torch.Tensor:
        """Index of each key among the vertices plus one (0 where there is no vertex)."""
        inside = ((keys >= self._lo) & (keys <= self._hi)).all(-1)
        codes = self._encode(keys)
        pos = torch.searchsorted(self.vertex_codes, codes).clamp(max=self.m - 1)
        found = inside & (self.vertex_codes[pos] == codes)
        return torch.where(found, pos + 1, torch.zeros_like(pos))

    def filter(self, values: torch.Tensor) -> torch.Tensor:
        """Gaussian-filter ``(N, C)`` values in feature space."""
        c = values.shape[1]
        grid = torch.zeros(self.m + 1, c, device=values.device, dtype=values.dtype)
        for a, b, splat in self._splat:
            grid[1:] += splat @ values[a:b]
        for n1, n2 in self.neighbours:
            blurred = grid[1:] + 0.5 * (grid[n1] + grid[n2])
            grid = torch.cat([grid[:1], blurred])
        return self._slice @ grid[1:]


def _group(codes: torch.Tensor):
    """Sort one chunk's vertex codes: distinct codes, their counts, the sorting order,
    and each entry's index among the distinct codes."""
    sorted_codes, entry = torch.sort(codes)
    new = torch.ones(len(codes), dtype=torch.bool, device=codes.device)
    new[1:] = sorted_codes[1:] != sorted_codes[:-1]
    starts = torch.nonzero(new).squeeze(1)
    counts = torch.diff(starts, append=torch.tensor([len(codes)], device=codes.device))
    local = torch.empty_like(entry)
    local[entry] = torch.cumsum(new, 0) - 1
    return sorted_codes[starts], counts, entry, local
