"""Pictures of a model: its loss curve, and its prediction over the range it was trained on.

Rendered on the server with matplotlib, an optional extra (`pip install 'service[plots]'`)
imported only when a plot is asked for, so a server without it starts as fast and answers
plot requests with 501. Figures are built with matplotlib's object API on the Agg canvas, never
pyplot: pyplot keeps global state, and plots render concurrently in the threadpool.
Nothing here reads the database or knows HTTP; the routes hand it arrays.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from service.datasets.training_data import sample_rows
from service.errors import FeatureNotInstalled

if TYPE_CHECKING:
    from matplotlib.figure import Figure

ImageFormat = Literal["png", "svg"]
MEDIA_TYPES: dict[ImageFormat, str] = {"png": "image/png", "svg": "image/svg+xml"}
# The most training points drawn: more only blur the picture and slow the rendering.
MAX_DATA_POINTS = 5000
# Points along the input axis of a 1-input model's prediction line.
LINE_POINTS = 400
# A 2-input model's prediction is drawn on a grid of at most this many points a side, fewer
# for a wide network, so one picture costs at most SURFACE_WORK rows x weights.
GRID_SIDE = 200
SURFACE_WORK = 200 * 200 * 10_000
DPI = 100


def new_figure(width: float, height: float) -> Figure:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise FeatureNotInstalled(
            "plots need matplotlib, which this server lacks: install the plots extra "
            "(pip install 'service[plots]') and restart the API"
        ) from exc
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def image_bytes(figure: Figure, fmt: ImageFormat) -> bytes:
    buffer = io.BytesIO()
    # No timestamps or version in the file: the same figure gives the same bytes.
    metadata: dict[str, Any] = {"Date": None} if fmt == "svg" else {"Software": None}
    figure.savefig(buffer, format=fmt, metadata=metadata)
    return buffer.getvalue()


@dataclass(frozen=True)
class LossCurve:
    title: str
    epochs: Sequence[int]
    train_loss: Sequence[float]
    val_loss: Sequence[float | None] | None


def render_loss(curve: LossCurve, fmt: ImageFormat) -> bytes:
    """Train and validation loss per epoch, on a log scale while the losses are positive."""
    figure = new_figure(7, 4.5)
    ax = figure.add_subplot()
    ax.set_title(curve.title)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    if not curve.epochs:
        ax.text(0.5, 0.5, "no epochs recorded yet", ha="center", va="center")
        return image_bytes(figure, fmt)
    epochs = np.asarray(curve.epochs)
    train = np.asarray(curve.train_loss, dtype=float)
    ax.plot(epochs, train, label="train", linewidth=1.2)
    values = [train]
    if curve.val_loss is not None:
        val = np.array([np.nan if v is None else v for v in curve.val_loss], dtype=float)
        ax.plot(epochs, val, label="validation", linewidth=1.2)
        values.append(val)
    every = np.concatenate(values)
    if (every[np.isfinite(every)] > 0).any():
        ax.set_yscale("log", nonpositive="mask")  # a loss of exactly 0 has no place on it
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return image_bytes(figure, fmt)


@dataclass(frozen=True)
class Surface:
    """What a surface plot needs of a model and its training data."""

    title: str
    input_min: np.ndarray
    input_max: np.ndarray
    feature_names: Sequence[str]
    output_names: Sequence[str]
    classes: Sequence[Any] | None  # classification: predict gives class probabilities
    n_parameters: int
    predict: Callable[[np.ndarray], np.ndarray]  # raw input rows -> outputs (or probabilities)
    data_x: np.ndarray | None  # None once the job's training data is no longer kept
    data_y: np.ndarray | None  # regression: rows of targets; classification: class indices


def training_points(surface: Surface) -> tuple[np.ndarray, np.ndarray] | None:
    """At most MAX_DATA_POINTS of the training rows, the same ones every time."""
    x, y = surface.data_x, surface.data_y
    if x is None or y is None:
        return None
    keep = sample_rows(len(x), MAX_DATA_POINTS)
    return x[keep], y[keep]


def render_surface(surface: Surface) -> bytes:
    if len(surface.feature_names) == 1:
        return render_line(surface)
    return render_map(surface)


def render_line(surface: Surface) -> bytes:
    """A 1-input model: its prediction as a line over the trained range, the data as points."""
    figure = new_figure(7, 4.5)
    ax = figure.add_subplot()
    ax.set_title(surface.title)
    ax.set_xlabel(surface.feature_names[0])
    xs = np.linspace(surface.input_min[0], surface.input_max[0], LINE_POINTS).reshape(-1, 1)
    outputs = surface.predict(xs)
    data = training_points(surface)
    colors = [f"C{i % 10}" for i in range(outputs.shape[1])]
    if surface.classes is not None:
        ax.set_ylabel("class probability")
        for i, label in enumerate(surface.classes):
            ax.plot(xs[:, 0], outputs[:, i], color=colors[i], label=f"P({label})")
        if data is not None:  # each training row as a tick above the curves, in its class's color
            x, y = data
            ax.scatter(x[:, 0], 1.04 + 0.03 * y, c=[colors[int(c)] for c in y], s=6, marker="|")
    else:
        ax.set_ylabel(surface.output_names[0] if len(surface.output_names) == 1 else "output")
        for i, name in enumerate(surface.output_names):
            if data is not None:
                x, y = data
                ax.scatter(x[:, 0], y[:, i], color=colors[i], s=6, alpha=0.4, label=f"data: {name}")
            ax.plot(xs[:, 0], outputs[:, i], color=colors[i], label=f"model: {name}")
    if data is None:
        ax.text(0.02, 0.02, "training data no longer kept", transform=ax.transAxes)
    ax.legend()
    return image_bytes(figure, "png")


def grid_side(n_parameters: int) -> int:
    return int(max(20, min(GRID_SIDE, (SURFACE_WORK / max(1, n_parameters)) ** 0.5)))


def render_map(surface: Surface) -> bytes:
    """A 2-input model, as the seed notebook drew it: the training data beside the model's
    prediction over the range of the training inputs (regression: its first output;
    classification: the predicted class), on one color scale."""
    side = grid_side(surface.n_parameters)
    axis1 = np.linspace(surface.input_min[0], surface.input_max[0], side)
    axis2 = np.linspace(surface.input_min[1], surface.input_max[1], side)
    x1, x2 = np.meshgrid(axis1, axis2)
    outputs = surface.predict(np.column_stack([x1.ravel(), x2.ravel()]))
    data = training_points(surface)
    figure = new_figure(10, 4.2)
    figure.suptitle(surface.title)
    data_ax, model_ax = figure.subplots(1, 2, sharex=True, sharey=True)
    if surface.classes is not None:
        classes = len(surface.classes)
        z = outputs.argmax(axis=1).reshape(x1.shape)
        style: dict[str, Any] = {"cmap": "tab10", "vmin": 0, "vmax": 9}
        filled = model_ax.contourf(x1, x2, z, levels=np.arange(classes + 1) - 0.5, **style)
        label = "predicted class"
        colors = None if data is None else data[1]
    else:
        z = outputs[:, 0].reshape(x1.shape)
        colors = None if data is None else data[1][:, 0]
        low, high = float(z.min()), float(z.max())
        if colors is not None and len(colors):
            low, high = min(low, float(colors.min())), max(high, float(colors.max()))
        style = {"cmap": "viridis", "vmin": low, "vmax": high}
        filled = model_ax.contourf(x1, x2, z, levels=100, **style)
        label = surface.output_names[0]
    data_ax.set_title("training data")
    model_ax.set_title("model")
    if data is not None and colors is not None:
        data_ax.scatter(data[0][:, 0], data[0][:, 1], c=colors, s=4, **style)
    else:
        data_ax.text(0.5, 0.5, "training data no longer kept", ha="center", va="center")
    for ax in (data_ax, model_ax):
        ax.set_xlabel(surface.feature_names[0])
    data_ax.set_ylabel(surface.feature_names[1])
    bar = figure.colorbar(filled, ax=[data_ax, model_ax], label=label)
    if surface.classes is not None:
        bar.set_ticks(range(len(surface.classes)), labels=[str(c) for c in surface.classes])
    return image_bytes(figure, "png")
