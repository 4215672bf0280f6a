"""`python -m service serve|api|worker|migrate` runs the service (flags override SERVICE_*
environment variables); `python -m service train|jobs|predict|loss` talks to one over HTTP."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING, Any

from service.client import cli
from service.process_guard import PARENT_PID_FLAG, die_with_parent

if TYPE_CHECKING:
    from service.config import Settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    def with_database(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--database-url", help="SQLAlchemy URL (SERVICE_DATABASE_URL)")
        return p

    def with_http(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--host", help="bind address (SERVICE_HOST, default 127.0.0.1)")
        p.add_argument("--port", type=int, help="port (SERVICE_PORT, default 8000)")
        return p

    def with_device(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--device", help="auto|cpu|cuda|cuda:N (SERVICE_DEVICE)")
        return p

    serve = commands.add_parser("serve", help="migrate, then run the API and N workers")
    with_device(with_http(with_database(serve)))
    serve.add_argument("--workers", type=int, help="worker processes (SERVICE_WORKERS, default 1)")
    with_http(with_database(commands.add_parser("api", help="run the API only")))
    worker = commands.add_parser("worker", help="run training workers (one by default)")
    with_device(with_database(worker))
    worker.add_argument(
        "--concurrency",
        type=cli.positive_int,
        default=1,
        metavar="N",
        help="worker processes under one supervisor (default 1: this process trains)",
    )
    # Internal: only a worker pool (`serve`, `worker --concurrency`) sets it: out of --help.
    worker.add_argument(PARENT_PID_FLAG, type=int, help=argparse.SUPPRESS)
    with_database(commands.add_parser("migrate", help="apply database migrations"))
    cli.add_commands(commands)
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    from service.config import Settings

    overrides: dict[str, Any] = {
        key: value
        for key, value in vars(args).items()
        if key in Settings.model_fields and value is not None
    }
    return Settings(**overrides)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.command in cli.COMMANDS:
        # A client of the service: nothing of the server side is imported for it.
        raise SystemExit(cli.run(args))
    run_service(args)


def run_service(args: argparse.Namespace) -> None:
    from service.file_modes import tighten_existing, use_private_umask
    from service.storage.blobs import BadBlobStoreUrl, open_blob_store

    # Before anything can create a file: the database, its journal, the owner secret.
    use_private_umask()
    if args.command == "worker" and args.parent_pid is not None:
        die_with_parent(args.parent_pid)  # first, so the window before it stays short
    settings = settings_from(args)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    tighten_existing(settings)
    if args.command != "migrate":
        # A blob store setting that cannot work stops the command before it serves or trains.
        try:
            open_blob_store(settings.blob_store_url)
        except BadBlobStoreUrl as exc:
            raise SystemExit(f"error: {exc}") from None
    if args.command == "migrate":
        from service.storage.migrate import rekey_legacy_owners, upgrade

        upgrade(settings.database_url)
        rekey_legacy_owners(settings)
    elif args.command == "worker" and args.concurrency > 1:
        from service.worker_pool import supervise

        supervise(settings, args.concurrency)
    elif args.command == "worker":
        from service.training.worker import run_worker

        run_worker(settings)
    elif args.command == "api":
        from service.serve import run_api
        from service.storage.migrate import rekey_legacy_owners

        # `api` leaves the schema to `migrate`, but only it knows the keys to re-key with.
        rekey_legacy_owners(settings)
        run_api(settings)
    else:
        from service.serve import serve

        serve(settings)


if __name__ == "__main__":
    main()
