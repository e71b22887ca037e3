"""Running batches of tiles through a network on a device, reading and writing around it.

Reading the next batch, computing one and writing the previous one overlap: reads on
a thread of their own, and on CUDA the copy back to the host behind an event.
"""

from __future__ import annotations

import copy
import itertools
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext

import numpy as np
import torch

from ..errors import Cancelled, SegNetError
from ..models.base import SegNet
from .geometry import Tile
from .sinks import Sink

Progress = Callable[[int, int], None] | None


@contextmanager
def eval_on(model: SegNet, device: torch.device, channels_last: bool) -> Iterator[SegNet]:
    """The model in eval mode on ``device``, never changing the caller's model.

    A model already in eval mode on the device is used as it is (read-only, so
    threads can share it); otherwise a private copy is made, because flipping the
    caller's train/eval flag would race with other threads using the same model.
    """
    dev = next(model.parameters()).device
    if dev == device and not channels_last and not model.training:
        yield model
        return
    m = copy.deepcopy(model).to(device).eval()
    if channels_last:
        m = m.to(memory_format=torch.channels_last)
    yield m


class TileTooLarge(Exception):
    """A single tile does not fit the device's memory."""


def _host_tensor(block: np.ndarray) -> torch.Tensor:
    """A raw block as a tensor without widening it on the host (less to copy to a GPU).

    uint16, the usual microscopy type, travels as its int16 bit pattern and is widened
    on the device (see :func:`_widen`); types torch lacks become float32 here.
    """
    if not block.flags.writeable:
        block = block.copy()  # torch wants writable memory (a read-only input's tile)
    if block.dtype == np.uint16:
        return torch.from_numpy(block.view(np.int16))
    if block.dtype in (np.uint32, np.uint64) or block.dtype.kind == "b":
        return torch.from_numpy(block.astype(np.float32))
    return torch.from_numpy(block)


def _widen(x: torch.Tensor, uint16: bool) -> torch.Tensor:
    if uint16:
        return (x.to(torch.int32) & 0xFFFF).to(torch.float32)
    return x.to(torch.float32)


class TileRunner:
    """Runs batches of raw tiles through a model and hands back the centres' probabilities.

    Tiles travel to the device in their own dtype and are normalised there. On CUDA
    a batch is only *launched* (copies and kernels queued, the result copied into
    pinned host memory behind an event), so the host can write the previous batch
    and read the next one while the GPU works; :meth:`collect` waits for it.
    """

    def __init__(self, model: SegNet, device: torch.device, precision: str = "auto"):
        self.model = model
        self.device = device
        self.cuda = device.type == "cuda"
        if precision == "auto":
            precision = (
                ("bfloat16" if torch.cuda.is_bf16_supported() else "float16")
                if self.cuda
                else "float32"
            )
        if precision not in ("float32", "bfloat16", "float16"):
            raise SegNetError("precision must be 'auto', 'float32', 'bfloat16' or 'float16'")
        self.precision = precision
        # Channels-last convolutions are faster on CUDA and also on the CPU (oneDNN).
        self.channels_last = model.dims == 2
        self.softmax = getattr(model, "output_activation", "softmax") == "softmax"

    def autocast(self):
        if self.precision == "float32":
            return nullcontext()
        return torch.autocast(self.device.type, dtype=getattr(torch, self.precision))

    def _input(self, batch: np.ndarray, stats: np.ndarray) -> torch.Tensor:
        x = _host_tensor(batch)
        if self.cuda:
            x = x.pin_memory().to(self.device, non_blocking=True)
        x = _widen(x, batch.dtype == np.uint16)
        st = torch.from_numpy(stats.astype(np.float32)).to(self.device)  # (B, C, 2)
        shape = (*st.shape[:2],) + (1,) * (x.ndim - 2)
        x = (x - st[..., 0].reshape(shape)) * st[..., 1].reshape(shape)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def launch(
        self,
        net: torch.nn.Module,
        batch: np.ndarray,
        stats: np.ndarray,
        offsets: list[tuple[int, ...]],
        core: Sequence[int],
    ) -> list:
        """Queue one batch: raw ``(B, C, ...)`` tiles with ``(B, C, 2)`` normalisation.

        Returns a handle for :meth:`collect`. CUDA out-of-memory halves the batch.
        """
        try:
            with torch.inference_mode(), self.autocast():
                logits = net(self._input(batch, stats))
                crops = []
                for i, off in enumerate(offsets):
                    crop = tuple(slice(o, o + c) for o, c in zip(off, core))
                    out = logits[(i, slice(None), *crop)].float()
                    # Native networks give class scores; package models their final output.
                    crops.append(torch.softmax(out, dim=0) if self.softmax else out)
                prob = torch.stack(crops)
                del logits
            if not self.cuda:
                return [(prob, None)]
            host = torch.empty(prob.shape, dtype=prob.dtype, pin_memory=True)
            host.copy_(prob, non_blocking=True)
            done = torch.cuda.Event()
            done.record()
            return [(host, done)]
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            if len(batch) == 1:
                raise TileTooLarge() from None
            h = len(batch) // 2
            return self.launch(net, batch[:h], stats[:h], offsets[:h], core) + self.launch(
                net, batch[h:], stats[h:], offsets[h:], core
            )

    @staticmethod
    def collect(handle: list) -> list[np.ndarray]:
        """Wait for a launched batch; each tile's centre probabilities ``(C, *core)``."""
        out = []
        for prob, done in handle:
            if done is not None:
                done.synchronize()
            out.extend(prob.numpy())
        return out


def run_tiles(
    model: SegNet,
    tiles: list[Tile],
    core: Sequence[int],
    read: Callable[[Tile], tuple[np.ndarray, np.ndarray]],
    sink: Sink,
    *,
    device: torch.device,
    batch_size: int,
    precision: str = "auto",
    progress: Progress = None,
    cancel: threading.Event | None = None,
) -> None:
    """Read, infer and write tiles batch by batch, overlapping the three.

    ``read`` gives a tile's raw ``(C, ...)`` input and its ``(C, 2)`` normalisation;
    ``sink`` receives each tile's written region.
    The next batch is read on a thread while one runs; on CUDA the previous batch is
    written while the next one computes.

    Raises
    ------
    Cancelled
        When ``cancel`` is set (checked before each batch).
    """
    runner = TileRunner(model, device, precision)
    batches = []
    for _, group in itertools.groupby(tiles, key=lambda t: t.in_shape):
        group = list(group)
        batches += [group[i : i + batch_size] for i in range(0, len(group), batch_size)]
    total = len(tiles)
    done = 0

    def load(batch: list[Tile]) -> tuple[np.ndarray, np.ndarray]:
        parts = [read(t) for t in batch]
        if len(parts) == 1:
            return parts[0][0][None], parts[0][1][None]
        return np.stack([p[0] for p in parts]), np.stack([p[1] for p in parts])

    def finish(batch: list[Tile], handle: list) -> None:
        nonlocal done
        for t, p in zip(batch, runner.collect(handle)):
            rel = tuple(slice(lo - s, hi - s) for lo, hi, s in zip(t.write_lo, t.write_hi, t.start))
            sink.write(t, p[(slice(None), *rel)])
        done += len(batch)
        if progress is not None:
            progress(done, total)

    if progress is not None:
        progress(0, total)
    in_flight = None
    with eval_on(model, device, runner.channels_last) as net, ThreadPoolExecutor(1) as pool:
        pending = pool.submit(load, batches[0]) if batches else None
        for i, batch in enumerate(batches):
            if cancel is not None and cancel.is_set():
                pending.cancel()
                raise Cancelled(f"cancelled after {done} of {total} tiles")
            x, stats = pending.result()
            pending = pool.submit(load, batches[i + 1]) if i + 1 < len(batches) else None
            offsets = [tuple(a - b for a, b in zip(t.start, t.in_lo)) for t in batch]
            handle = runner.launch(net, x, stats, offsets, core)
            if in_flight is not None:
                finish(*in_flight)
            in_flight = (batch, handle)
        if in_flight is not None:
            finish(*in_flight)
