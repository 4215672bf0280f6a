"""The client's commands: `python -m service train|jobs|predict|loss`.

Results go to stdout (a job id, CSV), everything meant for a person (progress, notes) to
stderr, so the output pipes into other programs. Exit status: 0 done, 1 the service or the
job failed, 2 a wrong command line, 130 interrupted.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from service.client import _csv
from service.client._exceptions import (
    MethodNotAllowed,
    NotFound,
    ServiceClientError,
    WaitTimeout,
)
from service.client._sync import Client

if TYPE_CHECKING:
    from service.client._results import Job

DEFAULT_URL = "http://127.0.0.1:8000"
COMMANDS = ("train", "jobs", "predict", "loss")
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")

Subcommands = argparse._SubParsersAction  # argparse exports no public name for it


def add_commands(commands: Subcommands[argparse.ArgumentParser]) -> None:
    """Add the client's commands to `python -m service`'s subcommands."""
    connection = argparse.ArgumentParser(add_help=False)
    group = connection.add_argument_group("connection")
    group.add_argument(
        "--url",
        help=f"the service's address (default: $SERVICE_URL, else {DEFAULT_URL})",
    )
    group.add_argument(
        "--api-key",
        metavar="KEY",
        help="API key, sent as a bearer token (default: $SERVICE_API_KEY; none if unset)",
    )
    _add_train(commands, connection)
    _add_jobs(commands, connection)
    _add_predict(commands, connection)
    _add_loss(commands, connection)


def _add_train(commands: Subcommands[argparse.ArgumentParser], parent: Any) -> None:
    train = commands.add_parser(
        "train",
        parents=[parent],
        help="train a network on a CSV file",
        description="Train a network on a CSV file (header row; every column but the target "
        "is a feature). The file is uploaded as a dataset where the service has datasets, "
        "else sent with the job. Prints the job id (also the model's id) on stdout. Settings "
        "left out take the service's defaults (the seed notebook's).",
    )
    train.add_argument("csv", metavar="CSV", help="the training data, with a header row")
    train.add_argument("--target", required=True, metavar="COLUMN", help="the column to predict")
    train.add_argument(
        "--task",
        choices=("regression", "classification"),
        default="regression",
        help="regression (numeric target) or classification (labels); default regression",
    )
    train.add_argument("--name", help="a name for the job")
    train.add_argument(
        "--hidden",
        type=positive_int,
        nargs="+",
        metavar="WIDTH",
        help="hidden layer widths, e.g. --hidden 80 or --hidden 64 32 (default 80)",
    )
    train.add_argument(
        "--activation", metavar="NAME", help="hidden activation, e.g. tanh, relu (default tanh)"
    )
    train.add_argument(
        "--output-activation",
        metavar="NAME",
        help="output activation for regression; identity for none (default tanh)",
    )
    train.add_argument("--optimizer", metavar="NAME", help="adam, adamw or sgd (default adam)")
    train.add_argument(
        "--learning-rate", type=float, metavar="RATE", help="the optimizer's step (default 0.01)"
    )
    train.add_argument(
        "--batch-size", type=positive_int, metavar="ROWS", help="rows per step (default 200)"
    )
    train.add_argument(
        "--epochs", type=positive_int, metavar="N", help="passes over the data (default 400)"
    )
    train.add_argument(
        "--loss", metavar="NAME", help="mse, mae or huber for regression (default mse)"
    )
    train.add_argument(
        "--validation-fraction",
        type=float,
        metavar="FRACTION",
        help="share of rows held out to report a validation loss (default 0)",
    )
    train.add_argument(
        "--patience",
        type=positive_int,
        metavar="EPOCHS",
        help="with a validation split: stop after this many epochs without improvement",
    )
    train.add_argument(
        "--seed", type=int, help="seeds the validation split, shuffles and weights (default 0)"
    )
    train.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        help="where to train: auto lets the service choose (default), cpu or cuda",
    )
    train.add_argument(
        "--inline",
        action="store_true",
        help="send the data with the job instead of uploading it as a dataset",
    )
    train.add_argument(
        "--wait",
        action="store_true",
        help="wait for the job to end, showing its epoch and loss; exit 1 if it fails",
    )
    train.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="with --wait: stop waiting after this many seconds (the job goes on)",
    )
    train.set_defaults(run=run_train)


def _add_jobs(commands: Subcommands[argparse.ArgumentParser], parent: Any) -> None:
    jobs = commands.add_parser(
        "jobs",
        parents=[parent],
        help="list training jobs",
        description="List training jobs, newest first, as a table.",
    )
    jobs.add_argument("--status", choices=STATUSES, help="only jobs in this status")
    jobs.add_argument(
        "--limit", type=positive_int, default=20, metavar="N", help="at most N jobs (default 20)"
    )
    jobs.set_defaults(run=run_jobs)


def _add_predict(commands: Subcommands[argparse.ArgumentParser], parent: Any) -> None:
    predict = commands.add_parser(
        "predict",
        parents=[parent],
        help="predict with a trained model",
        description="Predict with a trained model and write the predictions as CSV. A "
        "regressor gives a `prediction` column (prediction_1, ... for several outputs); a "
        "classifier gives `label` and one probability column per class.",
    )
    predict.add_argument("model_id", metavar="MODEL_ID", help="the model's (job's) id")
    predict.add_argument(
        "inputs",
        metavar="INPUTS",
        help="CSV of raw inputs; with a header row, columns are matched to the model's "
        "feature names where it has them (extra columns are ignored)",
    )
    predict.add_argument(
        "--output", "-o", metavar="FILE", help="write the CSV here instead of stdout"
    )
    predict.set_defaults(run=run_predict)


def _add_loss(commands: Subcommands[argparse.ArgumentParser], parent: Any) -> None:
    loss = commands.add_parser(
        "loss",
        parents=[parent],
        help="show a model's loss history",
        description="Print a model's loss history as CSV (epoch, train_loss, val_loss when "
        "it has a validation split, seconds); it grows while the job runs.",
    )
    loss.add_argument("model_id", metavar="MODEL_ID", help="the model's (job's) id")
    loss.add_argument(
        "--plot",
        metavar="FILE",
        help="also save the loss curve as an image, e.g. loss.png (needs matplotlib)",
    )
    loss.set_defaults(run=run_loss)


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    """Run a parsed client command; its exit status."""
    command: Callable[[Client, argparse.Namespace], int] = args.run
    url = args.url or os.environ.get("SERVICE_URL") or DEFAULT_URL
    api_key = args.api_key or os.environ.get("SERVICE_API_KEY") or None
    try:
        with Client(url, api_key=api_key) as client:
            return command(client, args)
    except BrokenPipeError:
        # The reader (`| head`, say) took what it wanted and left: nothing went wrong.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ServiceClientError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def run_train(client: Client, args: argparse.Namespace) -> int:
    classification = args.task == "classification"
    data: dict[str, Any] = {}
    if not args.inline:
        try:
            dataset = client.upload_dataset(args.csv, target=args.target, name=args.name)
            data["dataset_id"] = dataset.id
            _note(f"uploaded {args.csv} as dataset {dataset.id} ({dataset.n_rows} rows)")
        except (NotFound, MethodNotAllowed):
            _note("the service has no datasets endpoint: sending the data with the job")
    if not data:
        x, y, names = _csv.training_data(args.csv, args.target, classification=classification)
        data.update(x=x, y=y, feature_names=names)
    job = client.submit(
        **data,
        task=args.task,
        name=args.name,
        hidden_layers=args.hidden,
        activation=args.activation,
        output_activation=args.output_activation,
        optimizer=args.optimizer,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        epochs=args.epochs,
        loss=args.loss,
        validation_fraction=args.validation_fraction,
        early_stopping_patience=args.patience,
        seed=args.seed,
        device=args.device,
    )
    print(job.id, flush=True)
    if not args.wait:
        _note(f"job {job.id} {job.status}")
        return 0
    try:
        with _progress_display() as show:
            job = client.wait(job, timeout=args.timeout, progress=show)
    except WaitTimeout as exc:
        _note(f"{exc}; it goes on training")
        return 1
    except KeyboardInterrupt:
        _note(f"stopped waiting; job {job.id} goes on training on the service")
        return 130
    loss = f", train loss {job.train_loss:.6g}" if job.train_loss is not None else ""
    _note(f"job {job.id} {job.status} after {job.epoch}/{job.epochs} epochs{loss}")
    if job.error:
        _note(job.error)
    return 0 if job.succeeded else 1


@contextmanager
def _progress_display() -> Iterator[Callable[[Job], None]]:
    """A progress bar of epochs with the latest loss, on stderr; plain lines without rich."""
    try:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )
    except ImportError:
        shown: list[tuple[str, int]] = []

        def show_line(job: Job) -> None:
            if not shown or shown[-1] != (job.status, job.epoch):
                shown.append((job.status, job.epoch))
                _note(f"{job.status}: epoch {job.epoch}/{job.epochs}, loss {_loss(job)}")

        yield show_line
        return
    with Progress(
        TextColumn("{task.description:<9}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("epochs  loss {task.fields[loss]}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=False,
    ) as progress:
        bar = progress.add_task("queued", total=None, loss="-")

        def show_bar(job: Job) -> None:
            progress.update(
                bar,
                description=job.status,
                completed=job.epoch,
                total=job.epochs or None,
                loss=_loss(job),
            )

        yield show_bar


def _loss(job: Job) -> str:
    text = f"{job.train_loss:.6g}" if job.train_loss is not None else "-"
    if job.val_loss is not None:
        text += f" (val {job.val_loss:.6g})"
    return text


def run_jobs(client: Client, args: argparse.Namespace) -> int:
    page = client.list_jobs(status=args.status, limit=args.limit)
    columns = ("ID", "STATUS", "EPOCH", "TRAIN LOSS", "CREATED (UTC)", "NAME")
    rows = [
        (
            job.id,
            job.status,
            f"{job.epoch}/{job.epochs}",
            f"{job.train_loss:.6g}" if job.train_loss is not None else "-",
            _utc(job.created_at),
            job.name or "",
        )
        for job in page
    ]
    widths = [max(len(row[i]) for row in [columns, *rows]) for i in range(len(columns))]
    for row in [columns, *rows]:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())
    if page.total > len(page):
        _note(f"{len(page)} of {page.total} jobs (--limit for more)")
    return 0


def _utc(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def run_predict(client: Client, args: argparse.Namespace) -> int:
    model = client.get_model(args.model_id)
    x = _csv.input_rows(args.inputs, model.feature_names)
    prediction = client.predict(model, x)
    if prediction.probabilities is not None:
        classes = model.classes or tuple(range(prediction.probabilities.shape[1]))
        header = ["label", *(f"probability_{label}" for label in classes)]
        rows: Any = (
            [label, *map(repr, probabilities)]
            for label, probabilities in zip(
                prediction.predictions.tolist(), prediction.probabilities.tolist(), strict=True
            )
        )
    else:
        values = prediction.predictions.reshape(len(x), -1)
        outputs = values.shape[1]
        header = ["prediction"] if outputs == 1 else [f"prediction_{i + 1}" for i in range(outputs)]
        rows = ([repr(v) for v in row] for row in values.tolist())
    with _output(args.output) as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return 0


def run_loss(client: Client, args: argparse.Namespace) -> int:
    history = client.loss(args.model_id)
    writer = csv.writer(sys.stdout, lineterminator="\n")
    with_val = history.val_loss is not None
    writer.writerow(["epoch", "train_loss", *(["val_loss"] if with_val else []), "seconds"])
    val = history.val_loss or ()
    for i, epoch in enumerate(history.epochs):
        cells = [str(epoch), repr(history.train_loss[i])]
        if with_val:
            cells.append("" if val[i] is None else repr(val[i]))
        cells.append(repr(history.seconds[i]) if i < len(history.seconds) else "")
        writer.writerow(cells)
    if args.plot:
        _plot(history.epochs, history.train_loss, val, args.plot, args.model_id)
        _note(f"saved {args.plot}")
    return 0


def _plot(
    epochs: tuple[int, ...],
    train: tuple[float, ...],
    val: tuple[float | None, ...],
    path: str,
    model_id: str,
) -> None:
    try:
        import matplotlib
    except ImportError:
        raise SystemExit(
            "error: --plot needs matplotlib: pip install matplotlib (the CSV above has the "
            "same numbers)"
        ) from None
    matplotlib.use("Agg")  # a file, never a window
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots()
    axes.plot(epochs, train, label="train")
    if val:
        axes.plot(epochs, [float("nan") if v is None else v for v in val], label="validation")
    axes.set_xlabel("epoch")
    axes.set_ylabel("mean batch loss")
    axes.set_yscale("log")
    axes.set_title(f"Loss history of {model_id}")
    axes.legend()
    figure.savefig(path, dpi=100)
    plt.close(figure)


@contextmanager
def _output(path: str | None) -> Iterator[TextIO]:
    if path is None:
        yield sys.stdout
        return
    with open(path, "w", newline="", encoding="utf-8") as file:
        yield file


def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
