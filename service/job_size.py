"""What a job will take of a worker and of the database, estimated from its request alone.

A job within every per-field cap can still be too big as a whole: a [4096, 4096] network with a
batch of 740,000 rows needs tens of gigabytes of activations, and a very wide network trains for
hours and then cannot be stored. Both are refused when submitted (422), from these estimates,
before anything is allocated or queued.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.config import Settings
from service.training.network import NetworkConfig
from service.tuning import DATABASE_VALUE_LIMIT

FLOAT32 = 4
# Copies of the data a worker holds while training: the decoded float64 arrays, a float64
# scaled copy, and the float32 tensors it trains on.
DATA_BYTES_PER_VALUE = 8 + 8 + FLOAT32
# Copies of the weights besides the optimizer's slots: the weights, their gradients, the best
# epoch's weights (early stopping) and the checkpoint being written.
WEIGHT_COPIES = 4
# Per activation value of a batch: the pre-activation, the activation and its gradient.
ACTIVATION_COPIES = 3


def optimizer_slots(optimizer: str, momentum: float) -> int:
    """Tensors the optimizer keeps per weight (Adam: two moments; SGD: its momentum buffer)."""
    if optimizer in ("adam", "adamw"):
        return 2
    return 1 if momentum > 0 else 0


@dataclass(frozen=True)
class JobSize:
    peak_memory_bytes: int  # the worker's memory for this job, beyond its own footprint
    model_bytes: int  # the trained weights as stored
    checkpoint_bytes: int  # weights plus optimizer state, the largest value the job stores

    @classmethod
    def estimate(
        cls,
        network: NetworkConfig,
        *,
        n_rows: int,
        n_target_columns: int,
        batch_size: int,
        n_validation_rows: int,
        optimizer: str,
        momentum: float,
    ) -> JobSize:
        slots = optimizer_slots(optimizer, momentum)
        weights = network.n_parameters * FLOAT32
        data = n_rows * (network.n_inputs + n_target_columns) * DATA_BYTES_PER_VALUE
        widths = network.n_inputs + sum(network.hidden_layers) + network.n_outputs
        # A training batch, or the whole validation split, which is evaluated in one pass.
        activation_rows = max(batch_size, n_validation_rows)
        activations = activation_rows * widths * FLOAT32 * ACTIVATION_COPIES
        return cls(
            peak_memory_bytes=data + weights * (WEIGHT_COPIES + slots) + activations,
            model_bytes=weights,
            checkpoint_bytes=weights * (1 + slots),
        )

    def problems(self, settings: Settings) -> list[str]:
        """Why the job cannot be taken, as sentences; empty when it fits."""
        found = []
        if self.peak_memory_bytes > settings.max_job_memory_bytes:
            found.append(
                f"training would need about {_size(self.peak_memory_bytes)} of memory, above "
                f"the limit of {_size(settings.max_job_memory_bytes)}; use a smaller "
                "batch_size, fewer or narrower layers, or less data"
            )
        if self.model_bytes > settings.max_model_bytes:
            found.append(
                f"the trained weights would take {_size(self.model_bytes)}, above the limit of "
                f"{_size(settings.max_model_bytes)}; use fewer or narrower layers"
            )
        elif self.checkpoint_bytes > DATABASE_VALUE_LIMIT:
            found.append(
                f"the weights and optimizer state would take {_size(self.checkpoint_bytes)}, "
                f"more than the database stores in one value ({_size(DATABASE_VALUE_LIMIT)}); "
                "use fewer or narrower layers"
            )
        return found


def _size(n_bytes: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{n_bytes} bytes"
