"""Measure what a training step costs on each of a worker's devices, for placement.

Two networks per device and engine: a tiny one, whose step is all overhead (Python, dispatch,
kernel launches), and a wide one, whose step is mostly arithmetic. The tiny step's time is the
overhead. On the CPU the wide step's extra time gives the arithmetic rate; on a GPU, whose
kernels run while the next ones are launched, the wide step's whole time does (the wide network
there is large enough that its arithmetic outlasts the launches several times over). A few
hundred tiny steps and a handful of wide ones per device: well under a second on a GPU machine,
once at start-up.

Where a worker trains small networks through captured CUDA graphs (SERVICE_CUDA_GRAPHS), the
GPU's overhead is measured on that path, so placement weighs the GPU as jobs will meet it: the
tiny network is under cuda_graphs.GRAPH_MAX_PARAMETERS, the wide one above it (eager, as such
jobs train).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from service.placement import DeviceCost, JobShape
from service.training import cuda_graphs
from service.training.cuda_graphs import CudaGraphs
from service.training.engine import TrainingConfig
from service.training.network import NetworkConfig, build_network
from service.training.trainer import EngineChoice, make_engine

TINY = NetworkConfig(2, (8,), 1, "tanh", None)
TINY_BATCH, TINY_STEPS = 16, 200
# Wide enough that arithmetic dominates a step, small enough to time in a few tens of ms.
WIDE_CPU = NetworkConfig(32, (256, 256), 1, "tanh", None)
WIDE_CPU_BATCH, WIDE_CPU_STEPS = 512, 4
# About 0.85 TFLOP a step: ~10 ms or more on today's GPUs, against ~1.5 ms of launches.
WIDE_GPU = NetworkConfig(32, (2048, 2048), 1, "tanh", None)
WIDE_GPU_BATCH, WIDE_GPU_STEPS = 32768, 8


@dataclass(frozen=True)
class WorkerProfile:
    """The measured cost of a step on each device a worker has; the CPU has one per engine."""

    cpu_numpy: DeviceCost
    cpu_torch: DeviceCost
    gpu: DeviceCost | None

    def costs(self, cpu_engine: str) -> list[DeviceCost]:
        """Costs to place by, the CPU first: `cpu_engine` is the engine that would train the
        job on the CPU ("numpy" or "torch")."""
        cpu = self.cpu_numpy if cpu_engine == "numpy" else self.cpu_torch
        return [cpu] if self.gpu is None else [cpu, self.gpu]


def seconds_per_step(
    network: NetworkConfig,
    device: torch.device,
    engine: EngineChoice,
    batch: int,
    steps: int,
    graphs: CudaGraphs = "off",
) -> float:
    """The median-ish time of one training step: an untimed warm-up epoch, then a timed one."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch * steps, network.n_inputs, generator=generator).to(device)
    y = torch.randn(batch * steps, network.n_outputs, generator=generator).to(device)
    module = build_network(network).to(device)
    config = TrainingConfig(batch_size=batch)
    trainer = make_engine(module, network, config, device, engine, cuda_graphs=graphs)
    # The warm-up makes the allocator's blocks and the kernels; with graphs it must also
    # capture every block shape the timed epoch replays, so it runs the same rows.
    warm_rows = x.shape[0] if cuda_graphs.use_graphs(network, device, graphs) else batch * 2
    trainer.train_epoch(x[:warm_rows], y[:warm_rows], batch, None)
    started = time.perf_counter()
    trainer.train_epoch(x, y, batch, None)  # ends in a host sync: every step has run
    return (time.perf_counter() - started) / steps


def measure(
    device: torch.device,
    engine: EngineChoice,
    wide: NetworkConfig,
    wide_batch: int,
    wide_steps: int,
    graphs: CudaGraphs = "off",
) -> DeviceCost:
    overhead = seconds_per_step(TINY, device, engine, TINY_BATCH, TINY_STEPS, graphs)
    wide_step = seconds_per_step(wide, device, engine, wide_batch, wide_steps, graphs)
    flops = JobShape(wide.n_parameters, wide_batch, wide_batch, 1).flops_per_step
    asynchronous = device.type == "cuda"
    # On a GPU launches overlap the arithmetic, so the whole wide step is (conservatively) its
    # arithmetic. On the CPU the launches come on top; the floor guards against noise making a
    # wide step look no slower than a tiny one.
    arithmetic = wide_step if asynchronous else max(wide_step - overhead, 0.05 * wide_step)
    return DeviceCost(str(device), overhead, flops / arithmetic, asynchronous=asynchronous)


def profile_worker(
    gpu: torch.device | None, cpu_threads: int, cuda_graphs: CudaGraphs = "off"
) -> WorkerProfile:
    """Measure the CPU (both engines, with `cpu_threads` threads as large jobs get) and the GPU
    (small networks through captured graphs where `cuda_graphs` is "auto")."""
    cpu = torch.device("cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(cpu_threads)
    try:
        cpu_numpy = measure(cpu, "numpy", WIDE_CPU, WIDE_CPU_BATCH, WIDE_CPU_STEPS)
        cpu_torch = measure(cpu, "torch", WIDE_CPU, WIDE_CPU_BATCH, WIDE_CPU_STEPS)
    finally:
        torch.set_num_threads(threads)
    gpu_cost = None
    if gpu is not None:
        gpu_cost = measure(gpu, "torch", WIDE_GPU, WIDE_GPU_BATCH, WIDE_GPU_STEPS, cuda_graphs)
    return WorkerProfile(cpu_numpy=cpu_numpy, cpu_torch=cpu_torch, gpu=gpu_cost)
