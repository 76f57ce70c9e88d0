"""`graphsvc`: similarity queries from the command line, and the Triton server."""

from __future__ import annotations

import contextlib
import functools
import json
from typing import Iterator

import click

from graphsvc import settings as env
from graphsvc.clitools import (
    emit_json,
    env_option,
    open_settings_store,
    settings_from,
    settings_group,
)
from graphsvc.errors import ConfigError, DocumentNotFound, GraphsvcError
from graphsvc.service.queries import MAX_K, SHORT_FIELDS, Answer, NotInIndex, SimilarityQueries, field_names
from graphsvc.triton.cli import triton as triton_group


@settings_group
def cli():
    """graphsvc — similar documents from published indexes over a graph store.

    Settings come from GRAPHSVC_* environment variables; the options override them.
    """


@contextlib.contextmanager
def _queries(settings, with_store: bool = True) -> Iterator[SimilarityQueries]:
    """The service's query path over the published index and the store the settings
    name (opened first, so that a missing store is the error a user sees first)."""
    from graphsvc.index.artifacts import load_current

    with contextlib.ExitStack() as stack:
        store = stack.enter_context(open_settings_store(settings)) if with_store else None
        queries = SimilarityQueries(functools.partial(load_current, settings.index_dir),
                                    lambda: contextlib.nullcontext(store), settings.triton_url)
        stack.callback(queries.close)
        yield queries


def _not_in_index(queries: SimilarityQueries, error: NotInIndex) -> GraphsvcError:
    """More than the service's 404: whether the document exists at all, and which job
    puts it into the index."""
    with queries.open_store() as store:
        if store.get_documents(error.collection, [error.key])[0] is None:
            return DocumentNotFound(error.collection, error.key)
    return GraphsvcError(f"'{error.collection}/{error.key}' is not in index version {error.version} — "
                         f"rerun 'jobs embed-{error.collection}' to include it")


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
    click.option("-k", "--top-k", "k", default=10, show_default=True, type=click.IntRange(1, MAX_K),
                 help="How many results."),
    click.option("--fields", default=None,
                 help="Comma-separated document fields to show (default: short scalar fields)."),
    click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON."),
    click.option("--filter", "filter_json", default=None, metavar="JSON",
                 help='Structured filter, e.g. \'{"category": {"in": ["Books"]}, "price": {"lt": 20}}\' '
                      "(operators eq, ne, lt, lte, gt, gte, in); still returns k hits when k match."),
    click.option("--explain-aql", is_flag=True,
                 help="Print the equivalent APPROX_NEAR_COSINE AQL query with its bind parameters "
                      "(ArangoDB >= 3.12.4 with a vector index) instead of answering."),
]


def _with_query_options(function):
    for option in reversed(query_options):
        function = option(function)
    return function


@cli.command()
@click.argument("document")
@_with_query_options
@click.pass_context
def similar(ctx, document, k, fields, as_json, filter_json, explain_aql):
    """Documents most similar to DOCUMENT (COLLECTION/KEY), from the published index."""
    if document.count("/") != 1 or not all(document.split("/")):
        raise ConfigError(f"'{document}' is not COLLECTION/KEY (e.g. products/P0000042)")
    collection, key = document.split("/")
    with _queries(settings_from(ctx), with_store=not explain_aql) as queries:
        if explain_aql:
            _explain(queries, collection, k, queries.stored_vector(collection, key), filter_json, key, as_json)
            return
        try:
            answer = queries.similar(collection, key, k, field_names(fields) or SHORT_FIELDS, filter_json)
        except NotInIndex as exc:
            raise _not_in_index(queries, exc) from None
    _print_answer(answer, as_json)


def _explain(queries, collection, k, vector, filter_json, key, as_json) -> None:
    """The AQL that asks ArangoDB's vector index the same question, searching as widely
    as the published index does, and the server versions it needs."""
    from graphsvc.service.filters import parse_filter
    from graphsvc.store.arango.filters import similarity_query
    from graphsvc.store.arango.vector_index import FILTERED_SEARCH_MIN_VERSION, VECTOR_INDEX_MIN_VERSION, version_text

    conditions = parse_filter(filter_json)
    query = similarity_query(collection, k, vector.tolist(), conditions, excluding_key=key,
                             n_probe=_arangodb_n_probe(queries.index_of(collection).manifest))
    needs = version_text(FILTERED_SEARCH_MIN_VERSION if conditions else VECTOR_INDEX_MIN_VERSION)
    notes = [f"needs ArangoDB {needs} or later with a cosine vector index on 'embedding' (--arangodb-vector-index)"]
    if conditions:
        notes.append("the filter is applied inside the vector lookup: 3.12.4-3.12.5 refuse it (error 1554)")
    notes.append("LIMIT k is at most k hits: only the nProbe nearest cells are searched, so a filter can leave fewer")
    if as_json:
        emit_json({"query": str(query), "bindVars": query.bind_vars, "requires": needs, "notes": notes})
        return
    click.echo(str(query))
    for note in notes:
        click.echo(f"// {note}")
    click.echo("// bind parameters (python-arango bind_vars / arangosh bindVars):")
    click.echo(json.dumps(query.bind_vars))


def _arangodb_n_probe(manifest) -> int:
    """The defaultNProbe the embed job gave ArangoDB's index (recorded in the manifest),
    else the same rule applied to the published index (`scaled_n_probe`)."""
    from graphsvc.store.arango.vector_index import default_n_lists, scaled_n_probe

    built = manifest.extra.get("arangodb_vector_index") or {}
    if built.get("defaultNProbe"):
        return int(built["defaultNProbe"])
    return scaled_n_probe(default_n_lists(manifest.count), manifest.params.get("nlist"), manifest.params.get("nprobe"))


@cli.command()
@click.argument("collection")
@click.argument("text")
@_with_query_options
@click.pass_context
def search(ctx, collection, text, k, fields, as_json, filter_json, explain_aql):
    """Documents of COLLECTION closest to TEXT (embedded by the sentence encoder on Triton)."""
    with _queries(settings_from(ctx), with_store=not explain_aql) as queries:
        if explain_aql:
            _explain(queries, collection, k, queries.text_vector(collection, text), filter_json, None, as_json)
            return
        answer = queries.search(collection, text=text, k=k, fields=field_names(fields) or SHORT_FIELDS,
                                filter=filter_json)
    _print_answer(answer, as_json)


@cli.command()
@click.argument("user")
@click.option("-k", "--top-k", "k", default=10, show_default=True, type=click.IntRange(1, MAX_K),
              help="How many movies.")
@click.option("--fields", default=None,
              help="Comma-separated movie fields to show (default: short scalar fields).")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
@click.option("--filter", "filter_json", default=None, metavar="JSON",
              help='Structured filter on the movies, e.g. \'{"genre": {"in": ["Drama"]}, "year": {"gte": 1990}}\'.')
@click.pass_context
def recommend(ctx, user, k, fields, as_json, filter_json):
    """Movies USER (USERS/KEY, e.g. Users/73470) has not rated, best first, from the
    published recommendations (`jobs recommend-users`); a user with no ratings gets the
    most popular movies, marked as such."""
    if user.count("/") != 1 or not all(user.split("/")):
        raise ConfigError(f"'{user}' is not USERS/KEY (e.g. Users/73470)")
    users, key = user.split("/")
    with _queries(settings_from(ctx)) as queries:
        answer = queries.recommend(users, key, k, field_names(fields) or SHORT_FIELDS, filter_json)
    if as_json:
        emit_json(answer.to_dict())
        return
    if answer.note:
        click.echo(f"note: {answer.note}", err=True)
    if not answer.hits:
        click.echo("no results")
    width = max((len(h.key) for h in answer.hits), default=0)
    for rank, hit in enumerate(answer.hits, start=1):
        shown = "  ".join(f"{name}={_shown(value)}" for name, value in hit.fields.items())
        click.echo(f"{rank:>3}  {answer.movies}/{hit.key:<{width}}  {hit.score:.4f}  {shown}".rstrip())
    click.echo(f"({len(answer.hits)} {'popular movies' if answer.source == 'popular' else 'recommendations'} "
               f"for {users}/{key} from {users}.recommendations v{answer.index_version})", err=True)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def collections(ctx, as_json):
    """The store's collections with their kinds and document counts."""
    with open_settings_store(settings_from(ctx)) as store:
        rows = store.collections()
    if as_json:
        emit_json([{"name": c.name, "kind": c.kind, "count": c.count} for c in rows])
        return
    for c in rows:
        click.echo(f"{c.name:<24} {c.kind:<9} {c.count:>10}")


@cli.command()
@env_option(env.HOST, "--host")
@env_option(env.PORT, "--port", type=click.IntRange(0, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 32),
              help="uvicorn worker processes; each loads the indexes (memory × workers).")
@click.option("--collection", "collections", multiple=True,
              help="Serve only these collections (repeatable); default: every published one, found as they appear.")
@click.option("--reload-interval", default=1.0, show_default=True, type=click.FloatRange(0.05),
              help="Seconds between checks for a newly published index version.")
@click.option("--max-batch", default=256, show_default=True, type=click.IntRange(1, 256),
              help="Queries per batch request.")
@click.option("--max-body-bytes", default=1 << 20, show_default=True, type=click.IntRange(1024),
              help="Largest request body.")
@click.option("--request-timeout", default=10.0, show_default=True, type=click.FloatRange(0.1),
              help="Seconds before a request is answered with 503.")
@click.option("--no-store", is_flag=True, help="Answer keys and scores from the indexes alone (no fields, no filters).")
@click.option("--hold-store", is_flag=True,
              help="Never let go of the embedded store. By default the service keeps it open read-only and lets go "
                   "when a job announces a write (fields/filters answer 503 until the job releases it); with this "
                   "flag such jobs wait GRAPHSVC_STORE_LOCK_WAIT seconds, then fail.")
@click.pass_context
def serve(ctx, host, port, workers, collections, reload_interval, max_batch, max_body_bytes, request_timeout, no_store,
          hold_store):
    """The HTTP API: similar documents, search by vector or text, filters, hot-reloaded indexes.

    The bearer token comes from GRAPHSVC_API_TOKEN (never from the command line)."""
    import os

    import uvicorn

    from graphsvc.service.app import ServiceConfig

    settings = settings_from(ctx)
    config = ServiceConfig(
        index_dir=str(settings.index_dir), store=None if no_store else settings.store,
        password_file=str(settings.password_file) if settings.password_file else None,
        triton_url=settings.triton_url, collections=list(collections) or None, max_batch=max_batch,
        max_body_bytes=max_body_bytes, request_timeout=request_timeout, reload_interval=reload_interval,
        hold_store=hold_store,
    )
    if host not in ("127.0.0.1", "localhost", "::1") and not env.read(env.API_TOKEN):
        click.echo(f"warning: serving on {host} without a token — set {env.API_TOKEN} to require one", err=True)
    os.environ[env.SERVE_CONFIG.name] = config.to_json()
    click.echo(f"graphsvc serving {settings.index_dir} on http://{host}:{port} ({workers} worker(s))", err=True)
    uvicorn.run("graphsvc.service.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level="warning", access_log=False, timeout_graceful_shutdown=5)


cli.add_command(triton_group, name="triton")


def main() -> None:
    cli(prog_name="graphsvc")


if __name__ == "__main__":
    main()
