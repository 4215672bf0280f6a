"""`python -m service serve|api|worker|migrate`. Flags override SERVICE_* environment variables."""

from __future__ import annotations

import argparse
import logging
from typing import Any

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
    with_device(with_database(commands.add_parser("worker", help="run one training worker")))
    with_database(commands.add_parser("migrate", help="apply database migrations"))
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {
        key: value for key, value in vars(args).items() if key != "command" and value is not None
    }
    return Settings(**overrides)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    settings = settings_from(args)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if args.command == "migrate":
        from service.migrate import upgrade

        upgrade(settings.database_url)
    elif args.command == "worker":
        from service.training.worker import run_worker

        run_worker(settings)
    elif args.command == "api":
        from service.serve import run_api

        run_api(settings)
    else:
        from service.serve import serve

        serve(settings)


if __name__ == "__main__":
    main()
