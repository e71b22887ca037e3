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

Every chunk works in the same buffers and writes into arrays sized for all points
once (numpy-backed on the CPU, see ``buffers``): fresh memory costs page faults, which
otherwise take a large share of the build.
"""

from __future__ import annotations

import warnings

import torch

from ..errors import SegNetError
from .buffers import Buffers, empty

# Points per chunk: on the CPU small enough that temporaries are reused from cache;
# on a GPU large, as launches cost more than memory there.
_CHUNK = {"cpu": 2**16, "cuda": 2**22}
_TABLE_LIMIT = 2**20  # rank tuples tabulated at once (d = 5, RGB: 6**5 = 7776)
_CODE32_LIMIT = 2**31  # vertex codes below this are 32-bit (faster to sort and search)


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


def _simplex(f: torch.Tensor, lift: torch.Tensor, buf: Buffers, bary: torch.Tensor):
    """Each point's enclosing simplex, computed in coordinate-major layout.

    ``lift`` is ``_elevate`` as a ``(d+1, d)`` matrix divided by d+1. Returns the
    remainder-0 corner's first d coordinates divided by d+1 ``(d, n)`` (float, exact
    integers) and the ranks ``(d+1, n)`` (float, exact integers in [0, d]), in
    ``buf``'s buffers, and writes the barycentric weights into ``bary`` ``(n, d+1)``
    (point-major, the layout slicing needs). Coordinate-major rows are contiguous,
    so the few-element comparisons below run as whole-row operations instead of a
    sort per point.
    """
    d1 = lift.shape[0]
    d = d1 - 1
    n = f.shape[0]
    elevated = torch.mm(lift, f.T, out=buf("elevated", (d1, n)))  # elevated / (d+1)
    rd = torch.round(elevated, out=buf("rd", (d1, n)))
    diff = elevated.sub_(rd)
    # Rank of each coordinate's remainder, descending, ties by position (a stable
    # sort), counted pairwise; plus the coordinate sum, then wrapped into [0, d].
    # Start as if every earlier coordinate ranked after every later one; each pair
    # where the earlier one is ahead moves one rank from it to the later one.
    rank = buf("rank", (d1, n))
    torch.sum(rd, 0, out=rank[0])
    rank[1:] = rank[0]
    rank.add_(torch.arange(d, -1, -1, device=f.device, dtype=f.dtype)[:, None])
    ahead = buf("ahead", (n,))
    for j in range(1, d1):
        for k in range(j):
            torch.ge(diff[k], diff[j], out=ahead)
            rank[j] += ahead
            rank[k] -= ahead
    # The coordinate sum lies within ±(d+1)/2, so one wrap each way suffices.
    shift = torch.lt(rank, 0, out=buf("shift", (d1, n)))
    shift.sub_(torch.gt(rank, d, out=buf("over", (d1, n)))).mul_(d1)
    wrapped = rank.add_(shift)
    # A point below (above) its simplex moves its remainder-0 corner up (down) by
    # d+1 in that coordinate.
    v = diff.sub_(shift, alpha=1.0 / d1)
    base = rd[:d].add_(shift[:d].div(d1))
    # Barycentric weights: v goes to position rank (a permutation), and the weight
    # of the corner with remainder k is the difference of positions d - k and
    # d - k + 1 (mod d+1); corners are numbered by d - k.
    position = buf("position", (d1, n), torch.long).copy_(wrapped)
    at = buf("at", (n, d1)).scatter_(1, position.T, v.T)
    torch.sub(at[:, :-1], at[:, 1:], out=bary[:, :-1])
    torch.sub(at[:, d], at[:, 0], out=bary[:, d]).add_(1.0)
    return base, wrapped


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
        fmin, fmax = torch.aminmax(f, dim=0)
        fmin, fmax = fmin[:, None], fmax[:, None]
        emin = torch.minimum(lift * fmin, lift * fmax).sum(0)[:d]
        emax = torch.maximum(lift * fmin, lift * fmax).sum(0)[:d]
        # The coordinates of a lattice point are all congruent to one remainder r
        # modulo d+1: key = (d+1) q + r. A vertex's code is r plus d+1 times q's
        # mixed-radix number, which is about (d+1)**(d-1) times more compact than
        # numbering the keys, and so fits 32 bits for images of common sizes.
        qlo = torch.floor(emin.double() / d1) - 4
        qspan = torch.ceil(emax.double() / d1) + 3 - qlo + 1
        size_codes = d1 * float(qspan.prod())
        # Checked in floating point, before the integer codes could overflow.
        if not size_codes < 2.0**62:
            raise SegNetError("feature range too large for the lattice; scale the features")
        self._qlo, qspan = qlo.long(), qspan.long()
        code_type = torch.int32 if size_codes < _CODE32_LIMIT else torch.long
        self._radix = _radix(qspan)
        # Code offset of the corner with remainder k from a point's remainder-0
        # corner, per tuple of ranks: in coordinate i, q drops by one where
        # rank_i > d - k. Corners are numbered by d - k, the order in which
        # _simplex writes their barycentric weights.
        r = torch.arange(d, -1, -1, device=dev)  # remainder of each corner
        ranks = torch.arange(d1, device=dev)
        step = torch.where(ranks[None, :] <= d - r[:, None], 0, -1)  # (corner, rank)
        self._remainders = r
        tabulated = d1**d <= _TABLE_LIMIT
        if tabulated:
            # Every tuple of d ranks, the last rank varying fastest; one row per corner.
            count = torch.arange(d1**d, device=dev)
            tuples = torch.stack([count // d1 ** (d - 1 - j) % d1 for j in range(d)], 1)
            table = (step[:, tuples.flip(1)] * self._radix).sum(-1) * d1 + r[:, None]
            table = table.to(code_type)  # (d1, d1**d)
            digit = (d1 ** torch.arange(d, device=dev)).float()
        lift_t = (lift.T / d1).contiguous()
        size = _CHUNK.get(dev.type, 2**20)
        chunks = [(a, min(a + size, n)) for a in range(0, n, size)]
        # Arrays for every point, filled chunk by chunk: the slicing matrix's weights
        # (point-major) and column indices, the splatting matrix's weights and rows.
        index_type = torch.int32 if n * d1 < 2**31 else torch.long
        self._bary = empty((n, d1), torch.float32, dev)
        slice_col = empty((n * d1,), index_type, dev)
        splat_col = empty((n * d1,), index_type, dev)
        splat_val = empty((n * d1,), torch.float32, dev)
        self._code_type, self._tabulated = code_type, tabulated
        if tabulated:
            self._table, self._digit = table, digit
        self._step, self._lift_t = step, lift_t
        arrays = (slice_col, splat_col, splat_val)
        buf = Buffers(dev)
        found = [self._chunk(f, a, b, buf, arrays) for a, b in chunks]
        del buf
        # All distinct vertices; each chunk's splatting and slicing matrices.
        vertex_codes = torch.unique(torch.cat([codes for codes, _ in found]))
        self.vertex_codes = vertex_codes
        self.m = len(vertex_codes)
        self._chunks = []
        crow = torch.arange(0, min(size, n) * d1 + 1, d1, dtype=index_type, device=dev)
        for (a, b), (codes, counts) in zip(chunks, found):
            ids = torch.searchsorted(vertex_codes, codes).to(index_type)
            per_vertex = torch.zeros(self.m + 1, dtype=index_type, device=dev)
            per_vertex[ids.long() + 1] = counts.to(index_type)
            seg = slice(a * d1, b * d1)
            splat = _csr(
                per_vertex.cumsum(0, dtype=index_type),
                splat_col[seg],
                splat_val[seg],
                (self.m, b - a),
            )
            cols = slice_col[seg]
            cols.copy_(ids.index_select(0, cols))
            slicing = _csr(crow[: b - a + 1], cols, self._bary[a:b].view(-1), (b - a, self.m))
            self._chunks.append((a, b, splat, slicing))
        # Neighbours of every vertex along each lattice direction, as indices into a
        # grid whose row 0 is zero (no vertex there). A step along direction k adds
        # d+1 to key k and subtracts 1 from every key: the remainder moves down by
        # one, and q changes by a fixed amount, another where the remainder wraps
        # around. The key bounds' margins keep every neighbour inside them, so codes
        # never alias. The step back is the inverse map, so it comes from a scatter
        # instead of a second search.
        low = torch.remainder(self.vertex_codes, d1) == 0
        total = int(self._radix.sum())
        rows = torch.arange(1, self.m + 1, device=dev)
        self.neighbours = []
        for k in range(d1):
            rk = int(self._radix[k]) if k < d else 0
            down = torch.where(low, d - d1 * (total - rk), d1 * rk - 1).to(code_type)
            n1 = self._find(self.vertex_codes + down)
            # Row 0 collects the vertices without a neighbour; it is dropped.
            n2 = torch.zeros(self.m + 1, dtype=n1.dtype, device=dev).scatter_(0, n1, rows)
            self.neighbours.append((n1, n2[1:]))

    def _chunk(self, f, a, b, buf, arrays):
        """Points ``a:b``: their simplices, their entries of the splatting and slicing
        matrices (the slicing matrix's vertices numbered within the chunk for now),
        and the chunk's distinct vertex codes with their entry counts."""
        slice_col, splat_col, splat_val = arrays
        d1, code_type = self.d + 1, self._code_type
        size_ab = b - a
        bary = self._bary[a:b]
        base, rank = _simplex(f[a:b], self._lift_t, buf, bary)
        key = buf("key", (self.d, size_ab), code_type)
        qlo, scale = self._qlo.to(code_type), (d1 * self._radix).to(code_type)
        key.copy_(base).sub_(qlo[:, None]).mul_(scale[:, None])
        base_code = torch.sum(key, 0, dtype=code_type, out=buf("base_code", (size_ab,), code_type))
        # Vertex codes of every corner, corner-major: entry k * size + p.
        codes = buf("codes", (d1, size_ab), code_type)
        if self._tabulated:
            tuple_index = torch.mv(rank[: self.d].T, self._digit).long()
            for k in range(d1):
                torch.index_select(self._table[k], 0, tuple_index, out=codes[k])
        else:
            codes.copy_(self._remainders[:, None].expand(d1, size_ab))
            for j in range(self.d):
                codes += self._step[:, rank[j].long()] * (d1 * self._radix[j])
        codes += base_code
        sorted_codes = buf("sorted_codes", (d1 * size_ab,), code_type)
        entry = buf("entry", (d1 * size_ab,), torch.long)
        torch.sort(codes.view(-1), out=(sorted_codes, entry))
        new = buf("new", (d1 * size_ab,), torch.bool)
        new[0] = True
        torch.ne(sorted_codes[1:], sorted_codes[:-1], out=new[1:])
        starts = torch.nonzero(new).squeeze(1)
        distinct = buf("distinct", (d1 * size_ab,), slice_col.dtype)
        torch.cumsum(new, 0, dtype=slice_col.dtype, out=distinct).sub_(1)
        counts = torch.diff(starts, append=starts.new_tensor([d1 * size_ab]))
        seg = slice(a * d1, b * d1)
        # Each entry's point p and corner k, and its place p * (d+1) + k in the
        # point-major arrays (shifts and masks where the chunk size allows).
        rows = splat_col[seg]
        rows.copy_(entry)
        place = buf("place", (d1 * size_ab,), torch.long)
        if size_ab & (size_ab - 1) == 0:
            rows.bitwise_and_(size_ab - 1)
            torch.bitwise_right_shift(entry, size_ab.bit_length() - 1, out=place)
        else:
            rows.remainder_(size_ab)
            torch.div(entry, size_ab, rounding_mode="floor", out=place)
        place.add_(rows, alpha=d1)
        # Splatting matrix, grouped by vertex: each entry's point (rows) and weight.
        torch.index_select(bary.view(-1), 0, place, out=splat_val[seg])
        # Slicing matrix, point-major: each entry's vertex (numbered within the chunk
        # for now); its weights are the barycentric weights as they are.
        slice_col[seg].scatter_(0, place, distinct)
        return sorted_codes.index_select(0, starts), counts

    def _find(self, codes: torch.Tensor) -> torch.Tensor:
        """Index of each code among the vertices plus one (0 where there is no vertex)."""
        pos = torch.searchsorted(self.vertex_codes, codes).clamp_(max=self.m - 1)
        found = self.vertex_codes.index_select(0, pos) == codes
        return torch.where(found, pos + 1, torch.zeros_like(pos))

    @property
    def chunks(self) -> list[tuple[int, int]]:
        """The point ranges ``(start, stop)`` that :meth:`splat` and :meth:`slice` take."""
        return [(a, b) for a, b, _, _ in self._chunks]

    def grid(self, channels: int, like: torch.Tensor) -> torch.Tensor:
        """An empty grid of vertex values ``(M + 1, channels)``; row 0 stays zero."""
        return torch.zeros(self.m + 1, channels, device=like.device, dtype=like.dtype)

    def splat(self, index: int, values: torch.Tensor, grid: torch.Tensor) -> None:
        """Add chunk ``index``'s values ``(stop - start, C)`` onto the grid's vertices."""
        grid[1:].addmm_(self._chunks[index][2], values)

    def blur(self, grid: torch.Tensor) -> torch.Tensor:
        """The grid blurred along every lattice direction, [1/2, 1, 1/2] each time.

        The given grid and one more take turns as buffers (the given one is
        overwritten); returns the one that holds the result.
        """
        other = torch.zeros_like(grid)
        for n1, n2 in self.neighbours:
            inner = other[1:]
            torch.index_select(grid, 0, n1, out=inner)
            inner.add_(grid.index_select(0, n2)).mul_(0.5).add_(grid[1:])
            grid, other = other, grid
        return grid

    def slice(self, index: int, grid: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Chunk ``index``'s filtered values from a blurred grid, into ``out``."""
        return torch.mm(self._chunks[index][3], grid[1:], out=out)

    def filter(self, values: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Gaussian-filter ``(N, C)`` values in feature space (into ``out`` if given)."""
        grid = self.grid(values.shape[1], values)
        for i, (a, b) in enumerate(self.chunks):
            self.splat(i, values[a:b], grid)
        grid = self.blur(grid)
        if out is None:
            out = empty((self.n, values.shape[1]), values.dtype, values.device)
        for i, (a, b) in enumerate(self.chunks):
            self.slice(i, grid, out[a:b])
        return out
