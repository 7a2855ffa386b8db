"""``python -m worker.storage migrate`` applies the schema migrations to ``DATABASE_URL``."""

from __future__ import annotations

import argparse
import sys

from sqlalchemy.engine import make_url

from ..config.settings import Settings
from ..errors import SettingsError
from . import migrate


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run it; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m worker.storage", description="Database schema of the worker.")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("migrate", help="apply migrations up to a revision (default: the latest)")
    up.add_argument("revision", nargs="?", default="head")
    down = commands.add_parser("downgrade", help="revert migrations down to a revision ('base' drops the tables)")
    down.add_argument("revision")
    commands.add_parser("current", help="print the revision the database is at")
    parser.add_argument("--database-url", help="default: DATABASE_URL, else the SQLite file under ./var/")
    args = parser.parse_args(argv)
    try:
        url = args.database_url or Settings.from_env(signs=False).database_url
    except SettingsError as e:
        print(f"configuration error: {e}", file=sys.stderr)
        return 2
    shown = make_url(url).render_as_string(hide_password=True)
    if args.command == "migrate":
        migrate.upgrade(url, args.revision)
    elif args.command == "downgrade":
        migrate.downgrade(url, args.revision)
    if args.command != "current":
        print(f"{shown}: schema at revision {migrate.current(url) or '(none)'}")
    else:
        print(migrate.current(url) or "(none)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
