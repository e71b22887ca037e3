"""A permutohedral lattice (Adams, Baek & Davis 2010) in plain torch.

Fast approximate Gaussian filtering in a d-dimensional feature space (positions and
colours for the CRF's bilateral kernel): values are splatted onto the vertices of a
lattice whose size follows the image content, blurred along the lattice's d+1
directions, and sliced back. Built once per image; each filtering is a few gathers
and scatters, on the CPU or the GPU.
"""

from __future__ import annotations

import torch


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
        # Elevate onto the hyperplane sum(x) = 0 in d+1 dimensions.
        inv_std = (2.0 / 3.0) ** 0.5 * d1
        idx = torch.arange(d, device=dev, dtype=torch.float32)
        scale = inv_std / torch.sqrt((idx + 1) * (idx + 2))
        cf = f * scale
        tail = torch.flip(torch.cumsum(torch.flip(cf, [1]), 1), [1])  # sum_{k>=j} cf_k
        tail = torch.cat([tail, torch.zeros(n, 1, device=dev)], 1)  # (n, d+1)
        j = torch.arange(1, d1, device=dev, dtype=torch.float32)
        elevated = torch.empty(n, d1, device=dev)
        elevated[:, 0] = tail[:, 0]
        elevated[:, 1:] = tail[:, 1:] - j * cf
        # Closest remainder-0 point, and the simplex containing the point.
        rd = torch.round(elevated / d1)
        rem0 = rd * d1
        total = rd.sum(1, keepdim=True).long()
        diff = elevated - rem0
        gt = diff[:, None, :] > diff[:, :, None]  # [n, i, j]: d_j > d_i
        ge = diff[:, None, :] >= diff[:, :, None]
        lower = torch.tril(torch.ones(d1, d1, dtype=torch.bool, device=dev), -1)  # j < i
        rank = torch.where(lower, ge, gt).sum(2) + total
        low = rank < 0
        high = rank > d
        rank = torch.where(low, rank + d1, torch.where(high, rank - d1, rank))
        rem0 = torch.where(low, rem0 + d1, torch.where(high, rem0 - d1, rem0))
        # Barycentric coordinates.
        v = (elevated - rem0) / d1
        bary = torch.zeros(n, d + 2, device=dev)
        bary.scatter_add_(1, d - rank, v)
        bary.scatter_add_(1, d - rank + 1, -v)
        bary[:, 0] += 1.0 + bary[:, d + 1]
        self.bary = bary[:, :d1].contiguous()
        # Vertex keys: first d coordinates of each of the d+1 simplex corners.
        r = torch.arange(d1, device=dev)
        canon = torch.where(
            r[None, :] <= d - r[:, None], r[:, None], r[:, None] - d1
        )  # [rem, rank]
        keys = rem0[:, None, :d].long() + canon[:, rank[:, :d]].permute(1, 0, 2)  # (n, d+1, d)
        keys = keys.reshape(-1, d)
        self._lo = keys.min(0).values - 2 * d1
        span = keys.max(0).values + 2 * d1 - self._lo + 1
        self._radix = torch.cumprod(
            torch.cat([torch.ones(1, device=dev, dtype=torch.long), span[:-1]]), 0
        )
        if float(span.double().prod()) >= 2.0**62:
            raise ValueError("feature range too large for the lattice; scale the features")
        codes = self._encode(keys)
        self.vertex_codes, inverse = torch.unique(codes, return_inverse=True)
        self.offsets = inverse.reshape(n, d1)
        self.m = len(self.vertex_codes)
        # Neighbours of every vertex along each lattice direction.
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
        codes = self._encode(keys)
        pos = torch.searchsorted(self.vertex_codes, codes).clamp(max=self.m - 1)
        found = self.vertex_codes[pos] == codes
        return torch.where(found, pos + 1, torch.zeros_like(pos))

    def filter(self, values: torch.Tensor) -> torch.Tensor:
        """Gaussian-filter ``(N, C)`` values in feature space."""
        c = values.shape[1]
        grid = torch.zeros(self.m + 1, c, device=values.device, dtype=values.dtype)
        w = (self.bary[:, :, None] * values[:, None, :]).reshape(-1, c)
        grid.index_add_(0, self.offsets.reshape(-1) + 1, w)
        for n1, n2 in self.neighbours:
            blurred = grid[1:] + 0.5 * (grid[n1] + grid[n2])
            grid = torch.cat([grid[:1], blurred])
        picked = grid[self.offsets + 1]  # (N, d+1, C)
        return (picked * self.bary[:, :, None]).sum(1)
