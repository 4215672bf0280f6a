"""What an upload may hold: a dataset that no job could train on is refused when uploaded."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.config import Settings

# float32 is what networks train in: larger magnitudes would become infinities.
FLOAT32_MAX = float(np.finfo(np.float32).max)
# A column's name: as long as a job's feature names may be.
MAX_NAME_CHARS = 200


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int  # the upload itself (CSV or .npz), and what an .npz member may inflate to
    max_rows: int
    max_features: int
    max_cells: int  # rows x features
    max_classes: int
    max_label_chars: int
    max_label_total_chars: int

    @classmethod
    def from_settings(cls, settings: Settings) -> UploadLimits:
        return cls(
            max_bytes=settings.max_dataset_bytes,
            max_rows=settings.max_rows,
            max_features=settings.max_features,
            max_cells=settings.max_cells,
            max_classes=settings.max_classes,
            max_label_chars=settings.max_label_chars,
            max_label_total_chars=settings.max_label_total_chars,
        )

    def shape_problem(self, n_rows: int, n_features: int) -> str | None:
        """Why a dataset of this shape can never be trained on, or None."""
        if n_features > self.max_features:
            return (
                f"{n_features} feature columns exceed the limit of {self.max_features} "
                "(SERVICE_MAX_FEATURES)"
            )
        if n_rows > self.max_rows:
            return f"more than {self.max_rows} rows, the limit of a job (SERVICE_MAX_ROWS)"
        if n_rows * n_features > self.max_cells:
            return (
                f"{n_rows}x{n_features} feature values exceed the limit of {self.max_cells} "
                "(SERVICE_MAX_CELLS)"
            )
        return None
