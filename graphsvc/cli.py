"""`graphsvc`: similarity queries from the command line, and the Triton server."""

from __future__ import annotations

import click

from graphsvc.clitools import (
    common_options,
    emit_json,
    init_settings,
    open_settings_store,
    run_reporting_errors,
    settings_from,
)
from graphsvc.errors import ConfigError
from graphsvc.service.query import Answer, search_by_text, similar_to_key
from graphsvc.triton.cli import triton as triton_group


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@common_options
@click.pass_context
def cli(ctx, store, index_dir, triton_url, password_file, verbose):
    """graphsvc — similar documents from published indexes over a graph store.

    Settings come from GRAPHSVC_* environment variables; the options override them.
    """
    init_settings(ctx, store, index_dir, triton_url, password_file, verbose)


def _fields(value: str | None) -> list[str] | None:
    return [f.strip() for f in value.split(",") if f.strip()] if value else None


def _shown(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _print_answer(answer: Answer, as_json: bool) -> None:
    if as_json:
        emit_json(answer.to_dict())
        return
    if not answer.hits:
        click.echo("no results")
        return
    width = max(len(h.key) for h in answer.hits)
    for rank, hit in enumerate(answer.hits, start=1):
        fields = "  ".join(f"{name}={_shown(value)}" for name, value in hit.fields.items())
        click.echo(f"{rank:>3}  {hit.key:<{width}}  {hit.score:.4f}  {fields}")
    click.echo(f"({len(answer.hits)} hits from {answer.collection} index v{answer.index_version})", err=True)


query_options = [
    click.option("-k", "--top-k", "k", default=10, show_default=True, type=click.IntRange(1, 1000), help="How many results."),
    click.option("--fields", default=None, help="Comma-separated document fields to show (default: short scalar fields)."),
    click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON."),
]


def _with_query_options(function):
    for option in reversed(query_options):
        function = option(function)
    return function


@cli.command()
@click.argument("document")
@_with_query_options
@click.pass_context
@run_reporting_errors
def similar(ctx, document, k, fields, as_json):
    """Documents most similar to DOCUMENT (COLLECTION/KEY), from the published index."""
    if document.count("/") != 1 or not all(document.split("/")):
        raise ConfigError(f"'{document}' is not COLLECTION/KEY (e.g. products/P0000042)")
    collection, key = document.split("/")
    settings = settings_from(ctx)
    with open_settings_store(settings) as store:
        answer = similar_to_key(store, settings.index_dir, collection, key, k, _fields(fields))
    _print_answer(answer, as_json)


@cli.command()
@click.argument("collection")
@click.argument("text")
@_with_query_options
@click.pass_context
@run_reporting_errors
def search(ctx, collection, text, k, fields, as_json):
    """Documents of COLLECTION closest to TEXT (embedded by the sentence encoder on Triton)."""
    from graphsvc.triton.client import TritonClient

    settings = settings_from(ctx)
    with open_settings_store(settings) as store, TritonClient(settings.triton_url) as triton:
        answer = search_by_text(store, settings.index_dir, triton, collection, text, k, _fields(fields))
    _print_answer(answer, as_json)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
@run_reporting_errors
def collections(ctx, as_json):
    """The store's collections with their kinds and document counts."""
    with open_settings_store(settings_from(ctx)) as store:
        rows = store.collections()
    if as_json:
        emit_json([{"name": c.name, "kind": c.kind, "count": c.count} for c in rows])
        return
    for c in rows:
        click.echo(f"{c.name:<24} {c.kind:<9} {c.count:>10}")


cli.add_command(triton_group, name="triton")


def main() -> None:
    cli(prog_name="graphsvc")


if __name__ == "__main__":
    main()
