"""What both CLIs (`graphsvc`, `jobs`) share: settings from the environment, one-line
errors with non-zero exits, progress on stderr, JSON output."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, Callable

import click

from graphsvc.config import Settings
from graphsvc.errors import GraphsvcError
from graphsvc.store import GraphStore, open_store


class ReportingGroup(click.Group):
    """A command group whose commands (and subgroups') errors end the same way, in one
    place: a GraphsvcError as `error: <message>` on stderr and its exit code, no
    traceback; Ctrl-C as `interrupted` and 130."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GraphsvcError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


def settings_from(ctx: click.Context) -> Settings:
    return ctx.find_object(Settings) or Settings.from_env()


def store_option(function: Callable) -> Callable:
    return click.option(
        "--store", envvar="GRAPHSVC_STORE", default=None,
        help="Store: a file path (embedded DuckDB store) or duckdb://PATH. [env GRAPHSVC_STORE]",
    )(function)


def common_options(function: Callable) -> Callable:
    """Options of the top-level groups; they build the Settings object subcommands read."""
    options = [
        store_option,
        click.option("--index-dir", envvar="GRAPHSVC_INDEX_DIR", default=None, type=click.Path(),
                     help="Where published indexes live. [env GRAPHSVC_INDEX_DIR]"),
        click.option("--triton-url", envvar="GRAPHSVC_TRITON_URL", default=None,
                     help="Triton server, grpc://host:port or http://host:port. [env GRAPHSVC_TRITON_URL]"),
        click.option("--password-file", envvar="GRAPHSVC_ARANGO_PASSWORD_FILE", default=None, type=click.Path(),
                     help="File holding the ArangoDB password (else ARANGO_PASSWORD). "
                          "[env GRAPHSVC_ARANGO_PASSWORD_FILE]"),
        click.option("-v", "--verbose", is_flag=True, help="Log more on stderr."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def init_settings(ctx: click.Context, store, index_dir, triton_url, password_file, verbose) -> Settings:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    settings = Settings.from_env().with_overrides(
        store=store, index_dir=index_dir, triton_url=triton_url, password_file=password_file
    )
    ctx.obj = settings
    return settings


def open_settings_store(settings: Settings, create: bool = False) -> GraphStore:
    """The store the settings name (embedded file or ArangoDB, with its password file)."""
    return open_store(settings.store, create=create, password_file=settings.password_file)


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def progress(total: int, label: str, unit: str = "it"):
    """A tqdm bar on stderr (quiet when stderr is not a terminal)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=label, unit=unit, file=sys.stderr, disable=not sys.stderr.isatty(), leave=False)
