"""Training steps captured once as CUDA graphs and replayed, for small networks on a GPU.

A step of a small network is a few dozen tiny kernels; launched one by one from Python, the GPU
waits on the launches (tens of microseconds a step) and trains the notebook's job slower than a
CPU does. Captured into a torch.cuda.CUDAGraph, a whole block of steps replays with one launch.

What a graph needs, this module provides: static device buffers for the data (copied in each
epoch), a static index buffer that holds the block's slice of the epoch's order (copied in
before each replay; the gather of each batch happens inside the graph), and a step that never
syncs with the host (StackedTorchEngine's: losses add into a device tensor, the optimizer's step
counts live on the device). An epoch runs as blocks of at most BLOCK_STEPS full batches, then the
partial last batch as a block of its own, so `should_stop` is still asked between blocks.

The very same blocks run eagerly where there is nothing to capture (the CPU) or capture fails,
so the numerics are tested on any machine (tests/training/test_cuda_graphs.py), and a failed
capture costs speed, never the job.
"""

from __future__ import annotations

import logging
from typing import Any, Literal, Protocol

import torch

from service.training.engine import StopCheck
from service.training.network import NetworkConfig

log = logging.getLogger("service.worker")

CudaGraphs = Literal["auto", "off"]

# Graphs are used up to this many weights. Below it a step's arithmetic on a GPU takes about
# as long as launching its kernels or less (1M weights x 200 rows x 6 flops is ~1.2 GFLOP, tens
# of microseconds), so replaying beats launching; above it the arithmetic dominates and a graph
# would only add capture time and a second copy of the data.
GRAPH_MAX_PARAMETERS = 1_000_000
# The most full batches one captured block runs. Longer blocks launch less often but take
# longer to capture and hold `should_stop` off for longer; at a few microseconds a kernel, 32
# steps of a small network take well under 10 ms.
BLOCK_STEPS = 32


def use_graphs(network: NetworkConfig, device: torch.device, setting: CudaGraphs) -> bool:
    """Whether a job of `network` on `device` trains through captured graphs."""
    return (
        setting == "auto" and device.type == "cuda" and network.n_parameters <= GRAPH_MAX_PARAMETERS
    )


class BlockStep(Protocol):
    """What a runner needs from an engine (StackedTorchEngine implements it)."""

    def run_block(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, rows: int) -> None:
        """len(index) training steps; step k trains on rows index[k] of the flat data x, y."""
        ...

    def snapshot(self) -> list[torch.Tensor]:
        """Copies of everything a step changes (warm-up before a capture trains for real)."""
        ...

    def restore(self, saved: list[torch.Tensor]) -> None:
        """Put a snapshot back, in place."""
        ...


def plan_blocks(n_rows: int, batch_size: int) -> list[tuple[int, int, int]]:
    """An epoch as blocks: (first row, steps, rows per step)."""
    full, partial = divmod(n_rows, batch_size)
    blocks = [
        (first * batch_size, min(BLOCK_STEPS, full - first), batch_size)
        for first in range(0, full, BLOCK_STEPS)
    ]
    if partial:
        blocks.append((full * batch_size, 1, partial))
    return blocks


class EpochRunner:
    """Runs an engine's epochs as blocks of steps; on CUDA each block shape is captured once."""

    def __init__(self, step: BlockStep, device: torch.device) -> None:
        self.step = step
        self.device = device
        self.capture = device.type == "cuda"
        self.reset()

    def reset(self) -> None:
        """Forget the buffers and graphs (the engine's own buffers changed)."""
        self.graphs: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}
        self.shape: tuple[object, ...] | None = None
        self.pool: Any = None  # torch's graph pool handle, made at the first capture

    def run_epoch(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        order: torch.Tensor | None,
        batch_size: int,
        should_stop: StopCheck | None,
    ) -> tuple[int, bool]:
        """One pass: trial t visits x[t, order[t]] (order None: the rows as they are).
        Returns (batches run, whether all ran)."""
        n_rows = x.shape[1]
        batch_size = min(batch_size, n_rows)
        self._bind(x, y, batch_size)
        if order is None:
            visit = self.identity
        else:
            visit = torch.add(order.to(self.device), self.offsets, out=self.order)
        done = 0
        for first, steps, rows in plan_blocks(n_rows, batch_size):
            if done and should_stop is not None and should_stop():
                return done, False
            index = self.index[: steps * self.trials * rows].view(steps, self.trials * rows)
            block = visit[:, first : first + steps * rows].view(self.trials, steps, rows)
            index.view(steps, self.trials, rows).copy_(block.transpose(0, 1))
            self._run(steps, rows, index)
            done += steps
        return done, True

    def _bind(self, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> None:
        """Copy the epoch's data into the static buffers, (re)making them on a new shape."""
        trials, n_rows = x.shape[0], x.shape[1]
        shape = (tuple(x.shape), tuple(y.shape), y.dtype, batch_size)
        if shape != self.shape:
            self.reset()
            self.shape, self.trials = shape, trials
            flat = trials * n_rows
            self.x = torch.empty(flat, x.shape[2], device=self.device)
            self.y = torch.empty((flat, *y.shape[2:]), dtype=y.dtype, device=self.device)
            self.offsets = torch.arange(trials, device=self.device).unsqueeze(1) * n_rows
            self.identity = torch.arange(n_rows, device=self.device).unsqueeze(0) + self.offsets
            self.order = torch.empty_like(self.identity)
            # Zeros, not garbage: a warm-up may gather before the first block is copied in.
            self.index = torch.zeros(
                BLOCK_STEPS * trials * batch_size, dtype=torch.long, device=self.device
            )
        self.x.view(x.shape).copy_(x)
        self.y.view(y.shape).copy_(y)

    def _run(self, steps: int, rows: int, index: torch.Tensor) -> None:
        if self.capture:
            graph = self.graphs.get((steps, rows)) or self._try_capture(steps, rows, index)
            if graph is not None:
                graph.replay()
                return
        self.step.run_block(self.x, self.y, index, rows)

    def _try_capture(
        self, steps: int, rows: int, index: torch.Tensor
    ) -> torch.cuda.CUDAGraph | None:
        """The block captured, or None (and eager from now on) where capture fails."""
        saved = self.step.snapshot()
        try:
            graph = self._capture(steps, rows, index)
        except Exception as error:  # any failure: train eagerly rather than fail the job
            log.warning("CUDA graph capture failed, training eagerly instead: %r", error)
            self.capture = False
            return None
        finally:
            self.step.restore(saved)  # the warm-up trained; the block has not run yet
        self.graphs[(steps, rows)] = graph
        return graph

    def _capture(self, steps: int, rows: int, index: torch.Tensor) -> torch.cuda.CUDAGraph:
        # One eager step of this shape first, on a side stream as torch's docs ask: it makes
        # cuBLAS's handles and the allocator's blocks exist before capture.
        side = torch.cuda.Stream(self.device)  # type: ignore[no-untyped-call]
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            self.step.run_block(self.x, self.y, index[:1], rows)
        torch.cuda.current_stream(self.device).wait_stream(side)
        if self.pool is None:
            # One pool for every block shape: each block's temporaries die inside it (all it
            # writes lives in buffers made outside any graph), so the graphs can share memory.
            self.pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        # thread_local: the worker's other threads may touch CUDA meanwhile.
        with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
            self.step.run_block(self.x, self.y, index, rows)
        return graph
