"""What both CLIs (`graphsvc`, `jobs`) share: settings from the environment, one-line
errors with non-zero exits, progress on stderr, JSON output."""

from __future__ import annotations

import functools
import json
import logging
import sys
from typing import Any, Callable

import click

from graphsvc import settings as env
from graphsvc.errors import GraphsvcError
from graphsvc.settings import Settings, Variable
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


def env_option(variable: Variable, *declarations: str, given_only: bool = False, **kwargs) -> Callable:
    """A click option read from `variable` when the flag is not given, with its default and
    help from graphsvc.settings. `given_only`: default None, so that None means 'not given'
    (the group options, merged over Settings.from_env)."""
    default = None if given_only else variable.default
    kwargs.setdefault("show_default", default is not None)
    return click.option(*declarations, envvar=variable.name, default=default,
                        help=f"{kwargs.pop('help', variable.help)} [env {variable.name}]", **kwargs)


def store_option(function: Callable) -> Callable:
    return env_option(env.STORE, "--store", given_only=True)(function)


def common_options(function: Callable) -> Callable:
    """Options of the top-level groups; they build the Settings object subcommands read."""
    options = [
        store_option,
        env_option(env.INDEX_DIR, "--index-dir", given_only=True, type=click.Path()),
        env_option(env.TRITON_URL, "--triton-url", given_only=True),
        env_option(env.ARANGO_PASSWORD_FILE, "--password-file", given_only=True, type=click.Path()),
        click.option("-v", "--verbose", is_flag=True, help="Log more on stderr."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def settings_group(function: Callable) -> click.Group:
    """A top-level command group (`graphsvc`, `jobs`): the common options build the
    Settings its commands read, errors end in one place (ReportingGroup). The decorated
    function only gives the name and the help text."""

    @functools.wraps(function)
    def group(ctx, store, index_dir, triton_url, password_file, verbose):
        init_settings(ctx, store, index_dir, triton_url, password_file, verbose)

    return click.group(cls=ReportingGroup, context_settings={"help_option_names": ["-h", "--help"]})(
        common_options(click.pass_context(group)))


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
