"""Placement: each job trains on the device its worker finishes it soonest on."""

from __future__ import annotations

import math

import pytest
import torch

from service.placement import DeviceCost, JobShape, NoSuitableDevice, device_kind, place
from service.training.network import NetworkConfig
from service.training.profile import profile_worker

# Roughly what a GPU worker measured on an H200 with 16 cores (bench/README.md): a CUDA step
# costs ~1.4 ms of launches; a numpy step of a small network ~0.06 ms, an autograd one ~1.5 ms.
CPU = DeviceCost("cpu", step_overhead_seconds=6e-5, flops_per_second=5.7e10)  # numpy engine
CPU_TORCH = DeviceCost("cpu", step_overhead_seconds=1.5e-3, flops_per_second=3.6e11)
GPU = DeviceCost("cuda:0", step_overhead_seconds=1.4e-3, flops_per_second=4e13, asynchronous=True)


def shape(hidden: tuple[int, ...], batch: int, rows: int, epochs: int = 10) -> JobShape:
    network = NetworkConfig(2, hidden, 1, "tanh", None)
    return JobShape(network.n_parameters, batch, rows, epochs)


NOTEBOOK = shape((80,), batch=200, rows=2500, epochs=400)
WIDE_AND_LONG = shape((512, 512), batch=4096, rows=1_000_000)


def test_the_notebook_s_small_network_trains_on_the_cpu_of_a_gpu_worker() -> None:
    assert place(NOTEBOOK, [CPU, GPU]) == "cpu"
    assert shape((80,), batch=200, rows=1_000_000).steps == 50_000
    assert place(shape((80,), batch=200, rows=1_000_000), [CPU, GPU]) == "cpu"


def test_a_wide_network_on_many_rows_trains_on_the_gpu() -> None:
    assert place(WIDE_AND_LONG, [CPU_TORCH, GPU]) == "cuda:0"
    # The estimates say why: several times faster once arithmetic dominates.
    assert CPU_TORCH.estimate_seconds(WIDE_AND_LONG) > 5 * GPU.estimate_seconds(WIDE_AND_LONG)


def test_a_gpu_step_costs_the_larger_of_its_launches_and_its_arithmetic() -> None:
    launch_bound = shape((8,), batch=16, rows=16, epochs=1)
    assert GPU.step_seconds(launch_bound) == GPU.step_overhead_seconds
    compute_bound = shape((2048, 2048), batch=32768, rows=32768, epochs=1)
    assert GPU.step_seconds(compute_bound) == compute_bound.flops_per_step / 4e13
    # On the CPU one thread launches and computes: the costs add up.
    assert CPU.step_seconds(launch_bound) == pytest.approx(
        6e-5 + launch_bound.flops_per_step / 5.7e10
    )


def test_a_required_device_is_honoured_whatever_the_cost() -> None:
    assert place(NOTEBOOK, [CPU, GPU], required="cuda") == "cuda:0"
    assert place(WIDE_AND_LONG, [CPU_TORCH, GPU], required="cpu") == "cpu"
    assert place(WIDE_AND_LONG, [CPU_TORCH, GPU], required="auto") == "cuda:0"


def test_without_a_gpu_everything_trains_on_the_cpu() -> None:
    assert place(WIDE_AND_LONG, [CPU]) == "cpu"
    with pytest.raises(NoSuitableDevice, match="requires cuda; this worker has cpu"):
        place(NOTEBOOK, [CPU], required="cuda")


def test_a_tie_goes_to_the_first_listed_device() -> None:
    twin = DeviceCost("cuda:0", CPU.step_overhead_seconds, CPU.flops_per_second)
    assert place(NOTEBOOK, [CPU, twin]) == "cpu"


def test_a_job_overhead_keeps_tiny_jobs_off_a_device_that_costs_one() -> None:
    slow_start = DeviceCost("cuda:0", 1e-6, 1e15, job_overhead_seconds=5.0)
    assert place(shape((8,), batch=10, rows=10, epochs=1), [CPU, slow_start]) == "cpu"


def test_device_kinds() -> None:
    assert [device_kind(d) for d in ("cpu", "cuda", "cuda:1")] == ["cpu", "cuda", "cuda"]


def test_a_worker_measures_the_step_costs_of_its_cpu() -> None:
    threads = torch.get_num_threads()
    profile = profile_worker(None, cpu_threads=1)
    assert torch.get_num_threads() == threads  # restored
    assert profile.gpu is None
    for cost in (profile.cpu_numpy, profile.cpu_torch):
        assert cost.device == "cpu"
        assert 0 < cost.step_overhead_seconds < 0.05
        assert 0 < cost.flops_per_second < math.inf
    assert profile.costs("numpy") == [profile.cpu_numpy]
    assert profile.costs("torch") == [profile.cpu_torch]
    assert place(NOTEBOOK, profile.costs("numpy")) == "cpu"
