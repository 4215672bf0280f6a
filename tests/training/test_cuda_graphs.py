"""The CUDA-graph path: the blocks it captures run eagerly on the CPU with TorchEngine's numerics,
a failed capture falls back to them, and (on a CUDA machine) replaying equals running eagerly."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest
import torch

from service.training import cuda_graphs, profile
from service.training import trainer as trainer_module
from service.training.cuda_graphs import BLOCK_STEPS, GRAPH_MAX_PARAMETERS, plan_blocks, use_graphs
from service.training.data import TrainingTensors, epoch_order
from service.training.engine import TrainingConfig
from service.training.network import NetworkConfig, build_network
from service.training.stacked_torch import OneTrialEngine, StackedTorchEngine
from service.training.torch_engine import TorchEngine
from service.training.trainer import EngineChoice, TrainingResult, make_engine, train
from tests.support import cpu_tensors, sinc_data

CPU = torch.device("cpu")
NOTEBOOK = NetworkConfig(2, (80,), 1, "tanh", "tanh")
# 900 rows in batches of 16: 56 full batches (blocks of 32 and 24) and a partial one of 4.
BATCH = 16


def notebook_data() -> TrainingTensors:
    return cpu_tensors(*sinc_data(30), validation_fraction=0.0)


def trained(data: TrainingTensors, graphs: bool, epochs: int = 3, **kwargs: Any) -> TrainingResult:
    torch.manual_seed(0)
    config = TrainingConfig(batch_size=BATCH, epochs=epochs, **kwargs)
    engine: EngineChoice = "torch"
    return train(
        build_network(NOTEBOOK),
        NOTEBOOK,
        data,
        config,
        engine=engine,
        cuda_graphs="auto" if graphs else "off",
    )


@pytest.fixture
def graphs_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CPU takes the graph path (its blocks run eagerly: there is nothing to capture)."""
    monkeypatch.setattr(
        cuda_graphs, "use_graphs", lambda network, device, setting: setting == "auto"
    )


def test_blocks_cover_an_epoch() -> None:
    assert plan_blocks(900, BATCH) == [(0, 32, 16), (512, 24, 16), (896, 1, 4)]
    assert plan_blocks(2500, 200) == [(0, 12, 200), (2400, 1, 100)]
    assert plan_blocks(64, 64) == [(0, 1, 64)]
    for n_rows, batch in ((1, 1), (999, 7), (BLOCK_STEPS * 5, 1)):
        blocks = plan_blocks(n_rows, batch)
        assert sum(steps * rows for _, steps, rows in blocks) == n_rows
        assert all(steps <= BLOCK_STEPS for _, steps, _ in blocks)


def test_graphs_only_for_small_networks_on_cuda() -> None:
    cuda = torch.device("cuda", 0)
    assert use_graphs(NOTEBOOK, cuda, "auto")
    assert not use_graphs(NOTEBOOK, cuda, "off")
    assert not use_graphs(NOTEBOOK, CPU, "auto")
    wide = NetworkConfig(2, (1024, 1024), 1, "tanh", None)
    assert wide.n_parameters > GRAPH_MAX_PARAMETERS
    assert not use_graphs(wide, cuda, "auto")


def test_eager_default_everywhere_else() -> None:
    module = build_network(NOTEBOOK)
    for setting in ("auto", "off"):
        engine = make_engine(module, NOTEBOOK, TrainingConfig(), CPU, "torch", cuda_graphs=setting)
        assert isinstance(engine, TorchEngine)


@pytest.mark.usefixtures("graphs_on_cpu")
def test_block_steps_train_as_torch_engine() -> None:
    data = notebook_data()
    graphed, eager = trained(data, graphs=True), trained(data, graphs=False)
    assert graphed.engine == eager.engine == "torch"
    np.testing.assert_allclose(
        [e.train_loss for e in graphed.history],
        [e.train_loss for e in eager.history],
        rtol=2e-4,
    )
    for name, tensor in eager.state.items():
        np.testing.assert_allclose(graphed.state[name], tensor, rtol=1e-3, atol=1e-5)


def test_block_steps_classify_as_torch_engine() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 2))
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5).astype(np.int64)
    data = cpu_tensors(x, y, classification=True, validation_fraction=0.2)
    architecture = NetworkConfig(2, (16,), 3, "relu", None)
    config = TrainingConfig(loss="cross_entropy", batch_size=BATCH)
    torch.manual_seed(0)
    initial = build_network(architecture).state_dict()
    blocks = OneTrialEngine(architecture, initial, config, CPU, graphs=True)
    network = build_network(architecture)
    network.load_state_dict(initial)
    eager = TorchEngine(network, config)
    n_rows = data.x_train.shape[0]
    for epoch in (1, 2, 3):
        rows = torch.from_numpy(epoch_order(0, epoch, n_rows))
        x_epoch, y_epoch = data.x_train[rows], data.y_train[rows]
        got = blocks.train_epoch(x_epoch, y_epoch, BATCH, None)
        expected = eager.train_epoch(x_epoch, y_epoch, BATCH, None)
        assert got.batches == expected.batches == 15
        np.testing.assert_allclose(got.mean, expected.mean, rtol=2e-4)
    assert data.x_val is not None and data.y_val is not None
    np.testing.assert_allclose(
        blocks.evaluate(data.x_val, data.y_val), eager.evaluate(data.x_val, data.y_val), rtol=2e-4
    )


@pytest.mark.usefixtures("graphs_on_cpu")
def test_make_engine_picks_one_trial_stack() -> None:
    engine = make_engine(build_network(NOTEBOOK), NOTEBOOK, TrainingConfig(), CPU, "torch")
    assert isinstance(engine, TorchEngine)  # "off" by default
    engine = make_engine(
        build_network(NOTEBOOK), NOTEBOOK, TrainingConfig(), CPU, "torch", cuda_graphs="auto"
    )
    assert isinstance(engine, OneTrialEngine) and engine.stack.runner is not None


def stacked_pair(configs: list[TrainingConfig]) -> tuple[StackedTorchEngine, StackedTorchEngine]:
    inits = []
    for seed in range(len(configs)):
        torch.manual_seed(seed)
        inits.append(build_network(NOTEBOOK).state_dict())
    return tuple(  # type: ignore[return-value]
        StackedTorchEngine(NOTEBOOK, inits, configs, CPU, graphs=graphs) for graphs in (True, False)
    )


def test_indexed_blocks_gather_each_trials_order() -> None:
    data = notebook_data()
    n_rows = data.x_train.shape[0]
    configs = [TrainingConfig(learning_rate=lr) for lr in (0.01, 0.003, 0.02)]
    blocks, plain = stacked_pair(configs)
    x = data.x_train.expand(3, -1, -1)
    y = data.y_train.expand(3, -1, -1)
    for epoch in (1, 2):
        order = torch.stack([torch.from_numpy(epoch_order(s, epoch, n_rows)) for s in range(3)])
        by_index = blocks.train_epoch_indexed(x, y, order, BATCH, None)
        gathered = plain.train_epoch(
            torch.stack([data.x_train[o] for o in order]),
            torch.stack([data.y_train[o] for o in order]),
            BATCH,
            None,
        )
        np.testing.assert_allclose(by_index.means, gathered.means, rtol=2e-4)
        assert by_index.batches == gathered.batches == 57
    blocks.keep([1])  # the runner starts again on the smaller stack
    plain.keep([1])
    order = torch.from_numpy(epoch_order(1, 3, n_rows)).unsqueeze(0)
    np.testing.assert_allclose(
        blocks.train_epoch_indexed(x[:1], y[:1], order, BATCH, None).means,
        plain.train_epoch_indexed(x[:1], y[:1], order, BATCH, None).means,
        rtol=2e-4,
    )


def test_should_stop_is_asked_between_blocks() -> None:
    data = notebook_data()
    blocks, _ = stacked_pair([TrainingConfig()])
    asked: list[int] = []

    def stop_at_second_question() -> bool:
        asked.append(1)
        return len(asked) >= 2

    x, y = data.x_train.unsqueeze(0), data.y_train.unsqueeze(0)
    result = blocks.train_epoch(x, y, BATCH, stop_at_second_question)
    # Blocks of 32 and 24 steps ran; the partial batch did not.
    assert (result.batches, result.complete, len(asked)) == (56, False, 2)
    assert blocks.state(0).optimizer["0.weight"]["step"].item() == 56
    always = blocks.train_epoch(x, y, BATCH, lambda: True)
    assert (always.batches, always.complete) == (32, False)


@pytest.mark.usefixtures("graphs_on_cpu")
def test_failed_capture_trains_eagerly(caplog: pytest.LogCaptureFixture) -> None:
    """Capture on a CPU fails (no CUDA): the job goes on eagerly, with the same numerics."""
    data = notebook_data()
    real = cuda_graphs.EpochRunner.reset

    def capturing_reset(runner: cuda_graphs.EpochRunner) -> None:
        real(runner)
        runner.capture = True

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cuda_graphs.EpochRunner, "reset", capturing_reset)
        with caplog.at_level(logging.WARNING, logger="service.worker"):
            fallen_back = trained(data, graphs=True)
    assert "CUDA graph capture failed" in caplog.text
    eager = trained(data, graphs=False)
    np.testing.assert_allclose(
        [e.train_loss for e in fallen_back.history],
        [e.train_loss for e in eager.history],
        rtol=2e-4,
    )


@pytest.mark.usefixtures("graphs_on_cpu")
def test_a_graph_run_pauses_and_resumes_on_autograd() -> None:
    """A checkpoint of the graph path continues on TorchEngine (and so on any engine)."""
    data = notebook_data()
    unbroken = trained(data, graphs=False, epochs=4)
    seen: list[int] = []
    config = TrainingConfig(batch_size=BATCH, epochs=4)
    torch.manual_seed(0)
    paused = train(
        build_network(NOTEBOOK),
        NOTEBOOK,
        data,
        config,
        engine="torch",
        cuda_graphs="auto",
        should_pause=lambda: len(seen) == 2,
        on_epoch=lambda e: seen.append(e.epoch),
    )
    assert paused.stop_reason == "paused" and paused.checkpoint is not None
    assert paused.checkpoint.engine == "torch" and paused.checkpoint.epoch == 2
    resumed = train(
        build_network(NOTEBOOK), NOTEBOOK, data, config, engine="torch", resume=paused.checkpoint
    )
    np.testing.assert_allclose(
        [e.train_loss for e in paused.history + resumed.history],
        [e.train_loss for e in unbroken.history],
        rtol=2e-4,
    )


@pytest.mark.usefixtures("graphs_on_cpu")
def test_profile_times_the_graph_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where graphs would train a job, the profile times them, warmed on the timed shape."""
    built: list[tuple[str, str]] = []
    real_make_engine = trainer_module.make_engine

    def spied(*args: Any, **kwargs: Any) -> Any:
        engine = real_make_engine(*args, **kwargs)
        built.append((type(engine).__name__, kwargs.get("cuda_graphs", "off")))
        return engine

    monkeypatch.setattr(profile, "make_engine", spied)
    seconds = profile.seconds_per_step(profile.TINY, CPU, "torch", 16, 20, "auto")
    assert 0 < seconds < 0.05
    assert built == [("OneTrialEngine", "auto")]
    profile.seconds_per_step(profile.TINY, CPU, "torch", 16, 20)
    assert built[-1] == ("TorchEngine", "off")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="capturing CUDA graphs needs a GPU")
def test_captured_equals_eager_on_cuda() -> None:
    cuda = torch.device("cuda", 0)
    data = cpu_tensors(*sinc_data(30), validation_fraction=0.2)
    on_cuda = TrainingTensors(
        *(t.to(cuda) if t is not None else None for t in vars(data).values())  # type: ignore[arg-type]
    )
    histories = []
    for setting in ("auto", "off"):
        torch.manual_seed(0)
        config = TrainingConfig(batch_size=BATCH, epochs=4)
        network = build_network(NOTEBOOK).to(cuda)
        engine = make_engine(network, NOTEBOOK, config, cuda, "torch", cuda_graphs=setting)
        assert isinstance(engine, OneTrialEngine) == (setting == "auto")
        torch.manual_seed(0)
        result = train(
            build_network(NOTEBOOK).to(cuda),
            NOTEBOOK,
            on_cuda,
            config,
            engine="torch",
            cuda_graphs=setting,
        )
        histories.append(
            np.array([[e.train_loss, e.val_loss] for e in result.history], dtype=float)
        )
    np.testing.assert_allclose(histories[0], histories[1], rtol=2e-4)
    # Replays against eager runs of the very same blocks, with a stack of several trials.
    configs = [TrainingConfig(learning_rate=lr) for lr in (0.01, 0.003)]
    inits = [build_network(NOTEBOOK).state_dict() for _ in configs]
    captured, eager = (
        StackedTorchEngine(NOTEBOOK, inits, configs, cuda, graphs=True) for _ in range(2)
    )
    assert eager.runner is not None
    eager.runner.capture = False
    x = on_cuda.x_train.expand(2, -1, -1)
    y = on_cuda.y_train.expand(2, -1, -1)
    n_rows = x.shape[1]
    for epoch in (1, 2, 3):
        order = torch.stack([torch.from_numpy(epoch_order(s, epoch, n_rows)) for s in range(2)]).to(
            cuda
        )
        a = captured.train_epoch_indexed(x, y, order, BATCH, None)
        b = eager.train_epoch_indexed(x, y, order, BATCH, None)
        np.testing.assert_allclose(a.means, b.means, rtol=1e-5)
    assert captured.runner is not None and captured.runner.capture
    # One graph per block shape: 720 rows make blocks of 32 and 13 steps, no partial batch.
    assert len(captured.runner.graphs) == len({(s, r) for _, s, r in plan_blocks(n_rows, BATCH)})
    # Loading a state in place keeps the graphs valid.
    captured.load_state(0, eager.state(0))
    captured.load_state(1, eager.state(1))
    order = order.flip(1)
    a = captured.train_epoch_indexed(x, y, order, BATCH, None)
    b = eager.train_epoch_indexed(x, y, order, BATCH, None)
    np.testing.assert_allclose(a.means, b.means, rtol=1e-5)
