"""`jobs`: the batch jobs. Each command is a thin wrapper over one job module."""

from __future__ import annotations

from pathlib import Path

import click

from graphsvc import settings as env
from graphsvc.clitools import (
    emit_json,
    env_option,
    open_settings_store,
    progress,
    settings_from,
    settings_group,
)
from graphsvc.errors import ConfigError


@settings_group
def cli():
    """graphsvc batch jobs: restore dumps, train and export models, embed and index.

    Settings come from GRAPHSVC_* environment variables; the options override them.
    """


json_option = click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")


def executor_options(function):
    """Where a job computes: here, or on a Ray cluster (`graphsvc.distributed`)."""
    options = [
        env_option(env.EXECUTOR, "--executor", type=click.Choice(env.EXECUTOR.choices)),
        env_option(env.RAY_ADDRESS, "--ray-address"),
        click.option("--partitions", default=0, show_default=True, type=click.IntRange(0),
                     help="Ray: node partitions (0: two per actor, at least one per million nodes)."),
        click.option("--ray-actors", default=2, show_default=True, type=click.IntRange(1),
                     help="Ray: actors calling Triton, one client each (the bound on concurrent Triton work)."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _fanouts(value: str) -> tuple[int, ...]:
    try:
        fanouts = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise ConfigError(f"--fanouts must be comma-separated integers, got '{value}'") from None
    if not fanouts or any(f == 0 or f < -1 for f in fanouts):
        raise ConfigError(f"--fanouts needs positive numbers or -1 (all neighbours), got '{value}'")
    return fanouts


def _rating_options(function):
    options = [
        click.option("--users", default="Users", show_default=True, help="The users collection."),
        click.option("--ratings", default="Ratings", show_default=True,
                     help="The edge collection of ratings (users → movies)."),
        click.option("--rating", "rating_attribute", default="rating", show_default=True,
                     help="The edge attribute holding the star rating (missing: 3)."),
        click.option("--timestamp", "timestamp_attribute", default="timestamp", show_default=True,
                     help="The edge attribute ordering a user's ratings in time."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


@cli.command("restore-dumps")
@click.argument("directories", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--collection", "collections", multiple=True, metavar="NAME",
              help="Restore only this collection (repeatable). Naming a system collection includes it.")
@click.option("--exclude", multiple=True, metavar="NAME", help="Do not restore this collection (repeatable).")
@click.option("--overwrite", is_flag=True,
              help="Drop and recreate each restored collection first. "
                   "Default: upsert by _key, keeping other documents.")
@click.option("--resume", is_flag=True,
              help="Continue an interrupted restore after its last committed line; finished collections are skipped. "
                   "Without it a restore starts from the beginning and forgets earlier progress.")
@click.option("--on-error", type=click.Choice(["stop", "skip"]), default="stop", show_default=True,
              help="A bad line: stop (what was committed stays; fix it and use --resume) "
                   "or skip it into the rejects file.")
@click.option("--rejects-file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Where --on-error skip writes rejected lines as JSON Lines "
                   "[default: restore-rejects.jsonl beside the store file, else in the current directory].")
@click.option("--batch-size", default=50_000, show_default=True, type=click.IntRange(1),
              help="Lines per block; each block is one write (and one progress checkpoint).")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1),
              help="Collections restored at once on ArangoDB. The embedded store has a single writer "
                   "(DuckDB uses its own threads inside each write), so there it restores one at a time.")
@click.option("--dry-run", is_flag=True,
              help="Read the dumps and show what would be restored, with counts; write nothing.")
@click.option("--include-system-collections", is_flag=True, help="Also restore _-prefixed collections.")
@click.option("--create-database", is_flag=True,
              help="ArangoDB: create the database of the store URL when missing (the embedded file is always created).")
@json_option
@click.pass_context
def restore_dumps_command(ctx, directories, collections, exclude, overwrite, resume, on_error, rejects_file,
                          batch_size, threads, dry_run, include_system_collections, create_database, as_json):
    """Load arangodump DIRECTORIES into the store (upsert by _key), like arangorestore.

    Streams every data file in blocks with bounded memory; the progress of each
    collection is kept in the store, so an interrupted restore continues with --resume.
    """
    from graphsvc.store import is_server_url
    from jobs.restore_dumps import plan_restore, restore_dumps

    settings = settings_from(ctx)
    with progress(None, "restoring" if not dry_run else "reading", "lines") as bar:
        on_progress = lambda _name, n: bar.update(n)  # noqa: E731
        if dry_run:
            summary = plan_restore(list(directories), batch_size, include_system_collections,
                                   collections=collections, exclude=exclude, on_progress=on_progress)
        else:
            # arangorestore creates a database only when asked; the embedded file is its own database
            create = create_database if is_server_url(settings.store) else True
            with open_settings_store(settings, create=create) as store:
                summary = restore_dumps(
                    store, list(directories), batch_size, include_system_collections, on_progress,
                    collections=collections, exclude=exclude, overwrite=overwrite, resume=resume,
                    on_error=on_error, rejects_file=rejects_file, threads=threads,
                )
    for warning in summary.warnings:
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        emit_json(summary.to_dict())
        return
    for row in summary.collections:
        click.echo(_restore_line(row))
    totals = summary.totals
    verb = "would restore" if summary.dry_run else "restored"
    rate = f", {totals['lines_per_second']:,} lines/s" if totals["lines_per_second"] and not summary.dry_run else ""
    extras = [f"{totals['skipped']} skipped" + (f" (see {summary.rejects_file})" if totals["skipped"] and
                                                 summary.rejects_file else ""),
              f"{totals['removed']} removed"]
    if totals["dangling_edges"]:
        extras.append(f"{totals['dangling_edges']} dangling edges")
    if summary.graphs:
        extras.append(f"graphs: {', '.join(summary.graphs)}")
    click.echo(f"{verb} {totals['written']} documents into {totals['collections']} collections in "
               f"{totals['seconds']:.1f}s{rate}; " + ", ".join(extras))


def _restore_line(row) -> str:
    line = (f"{row.collection:<24} {row.kind:<9} read {row.read:>9}  written {row.written:>9}  "
            f"skipped {row.skipped:>6}  removed {row.removed:>6}  {row.status}")
    if row.resumed_from:
        line += f" from {row.resumed_from['file']} line {row.resumed_from['line'] + 1}"
    by_status: dict[str, list[str]] = {}
    reasons: dict[str, None] = {}
    for index in row.indexes:
        by_status.setdefault(index["status"], []).append(index["type"])
        if index["reason"]:
            reasons[index["reason"]] = None
    if by_status:
        line += "; indexes " + ", ".join(f"{status}: {' '.join(types)}" for status, types in by_status.items())
        line += f" ({'; '.join(reasons)})" if reasons else ""
    dangling = row.dangling_edges
    if dangling and dangling["count"]:
        example = dangling["examples"][0] if dangling["examples"] else None
        line += f"; {dangling['count']} dangling edges"
        if example:
            line += f" (e.g. {example['_key']}: {example['_from']} -> {example['_to']})"
    return line


@cli.group()
def synth():
    """Generate the sample dumps the project ships in arango_dumps/."""


@synth.command("products")
@click.option("--out", type=click.Path(path_type=Path), default=Path("arango_dumps/products"), show_default=True)
@click.option("--products", "num_products", default=4000, show_default=True, type=click.IntRange(10),
              help="Size of the small sample catalogue (without --scale/--nodes).")
@click.option("--categories", default=47, show_default=True, type=click.IntRange(2))
@click.option("--scale", type=click.Choice(["ogbn-products"]), default=None,
              help="The ogbn-products-shaped catalogue at its full size: 2,449,029 products, 61,859,140 co-purchases.")
@click.option("--nodes", default=None, type=click.IntRange(47), help="Products of an ogbn-products-shaped catalogue.")
@click.option("--edges", default=None, type=click.IntRange(1), help="Its undirected co-purchases (with --nodes).")
@click.option("--files", default=8, show_default=True, type=click.IntRange(1),
              help="Data files per collection (arangodump --split-files), with --scale/--nodes.")
@click.option("--threads", default=2, show_default=True, type=click.IntRange(1),
              help="Threads generating and compressing, with --scale/--nodes.")
@click.option("--seed", default=None, type=int, help="[default: 7 for the sample, 0 with --scale/--nodes]")
@click.option("--ogb-root", type=click.Path(path_type=Path, file_okay=False, exists=True), default=None,
              help="Write an OGB node dataset you have on disk (ogbn-products as ogb lays it out) as the same dump "
                   "instead: the workshop's own catalogue.")
@click.option("--ogb-split", default=None, help="Split directory under split/ [default: the only one there].")
@json_option
def synth_products(out, num_products, categories, scale, nodes, edges, files, threads, seed, ogb_root, ogb_split,
                   as_json):
    """A seeded ogbn-products-shaped graph with planted category structure: the small
    sample (default), or with --scale/--nodes a streamed catalogue of any size, split over
    gzip data files as arangodump writes large collections."""
    if ogb_root is not None:
        from jobs.synth import write_ogb_dump

        if scale is not None or nodes is not None or edges is not None:
            raise ConfigError("--ogb-root writes the dataset as it is; leave out --scale/--nodes/--edges")
        counts = write_ogb_dump(out, ogb_root, ogb_split, files=files, threads=threads)
    elif scale is None and nodes is None and edges is None:
        from jobs.synth import ProductGraphSpec, write_products_dump

        spec = ProductGraphSpec(num_products=num_products, num_categories=categories, seed=7 if seed is None else seed)
        counts = write_products_dump(out, spec)
    else:
        from jobs.catalogue import CatalogueSpec
        from jobs.synth import write_catalogue_dump

        if scale is not None and (nodes is not None or edges is not None):
            raise ConfigError("--scale fixes the size; give either --scale or --nodes with --edges")
        if scale is None and (nodes is None or edges is None):
            raise ConfigError("--nodes and --edges go together (or use --scale ogbn-products)")
        seed = 0 if seed is None else seed
        try:
            spec = CatalogueSpec.ogbn_products(seed) if scale else CatalogueSpec(nodes, edges, seed=seed)
        except ValueError as e:
            raise ConfigError(f"--nodes {nodes} --edges {edges}: {e}") from None
        with progress(spec.num_products + spec.num_edges, "writing", "rows") as bar:
            done = {}

            def advance(name, rows):
                bar.update(rows - done.get(name, 0))
                done[name] = rows

            counts = write_catalogue_dump(out, spec, files=files, threads=threads, on_progress=advance)
    emit_json(counts) if as_json else click.echo(
        f"wrote {out}: " + ", ".join(f"{k} {v}" for k, v in counts.items() if not isinstance(v, dict)))


@synth.command("movies")
@click.option("--out", type=click.Path(path_type=Path), default=Path("arango_dumps/movies"), show_default=True)
@click.option("--movies", "num_movies", default=None, type=click.IntRange(20),
              help="Generate a seeded catalogue of this many movies with people (directors, actors) and genres "
                   "(jobs.synth_movies) [default: the 202 hand-written movies].")
@click.option("--seed", default=1, show_default=True, help="With --movies: seeds the catalogue; keys carry it, so "
                                                         "two seeds give two disjoint catalogues (train / evaluate).")
@click.option("--users", default=0, show_default=True, type=click.IntRange(0),
              help="With --movies: users who rate movies (`rated` edges with a `rating`).")
@json_option
def synth_movies(out, num_movies, seed, users, as_json):
    """The small movie catalogue with genre and director edges, or with --movies a generated
    one with a real graph (directed_by, acted_in, has_genre, optionally rated)."""
    if num_movies is None:
        from jobs.synth import write_movies_dump

        counts = write_movies_dump(out)
    else:
        from jobs.synth_movies import MovieCatalogueSpec, write_movie_catalogue_dump

        counts = write_movie_catalogue_dump(out, MovieCatalogueSpec(movies=num_movies, seed=seed, users=users))
    emit_json(counts) if as_json else click.echo(f"wrote {out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


def _split_fractions(value: str) -> tuple[float, float]:
    try:
        train, valid = (float(v) for v in value.split(","))
    except ValueError:
        raise ConfigError(f"--split must be TRAIN,VALID fractions (the rest is test), got '{value}'") from None
    return train, valid


@cli.command("train-graphsage")
@click.option("--nodes", default="products", show_default=True, help="Node collection.")
@click.option("--edges", default="bought_together", show_default=True, help="Edge collection between those nodes.")
@click.option("--features", default="features", show_default=True, help="Attribute holding each node's feature vector.")
@click.option("--label", default="category", show_default=True, help="Attribute holding each node's class id.")
@click.option("--ogb-root", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Train on an OGB node dataset on disk instead of the store (ogbn_products/ as ogb writes it: "
                   "raw/*.csv.gz or processed/, split/<name>/).")
@click.option("--ogb-split", default=None, help="Split directory under split/ [default: the only one there].")
@click.option("--split-attribute", default=None,
              help="Attribute saying train/valid/test per document; without it, a seeded random split (--split).")
@click.option("--split", "split_fractions", default="0.6,0.2", show_default=True,
              help="Random split: TRAIN,VALID fractions of the labelled nodes; the rest is test.")
@click.option("--holdout-edges", default=0.1, show_default=True, type=click.FloatRange(0, 1, max_open=True),
              help="Share of edges kept out of training (seeded), for 'jobs evaluate' to test link recall on.")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False),
              default=Path("checkpoints/graphsage_products.pth.tar"), show_default=True)
@click.option("--epochs", default=20, show_default=True, type=click.IntRange(1))
@click.option("--patience", default=5, show_default=True, type=click.IntRange(1),
              help="Stop after this many epochs without a better validation accuracy.")
@click.option("--hidden", default=256, show_default=True, type=click.IntRange(1))
@click.option("--fanouts", default="15,10,5", show_default=True, help="Neighbours sampled per hop; one per layer.")
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(1), help="Training nodes per step.")
@click.option("--lr", "learning_rate", default=0.005, show_default=True, type=click.FloatRange(0, min_open=True))
@click.option("--dropout", default=0.5, show_default=True, type=click.FloatRange(0, 1, max_open=True))
@click.option("--seed", default=0, show_default=True, help="Seeds the split, held-out edges, sampling and weights.")
@env_option(env.DEVICE, "--device", type=click.Choice(["cpu", "cuda"]),
            help="Where the model trains [default: cuda when torch finds a GPU]; sampling stays on the CPU.")
@json_option
@click.pass_context
def train_command(ctx, nodes, edges, features, label, ogb_root, ogb_split, split_attribute, split_fractions,
                  holdout_edges, out, epochs, patience, hidden, fanouts, batch_size, learning_rate, dropout, seed,
                  device, as_json):
    """Train GraphSAGE (mean aggregation) with early stopping; the best checkpoint in the
    workshop's format, metrics as JSON beside it (OUT.metrics.json)."""
    from graphsvc.models.checkpoints import metrics_path
    from jobs.train import TrainingConfig, train_graphsage, train_graphsage_ogb

    hops = _fanouts(fanouts)
    config = TrainingConfig(hidden=hidden, epochs=epochs, patience=patience, fanouts=hops, num_layers=len(hops),
                            batch_size=batch_size, learning_rate=learning_rate, dropout=dropout,
                            split=_split_fractions(split_fractions), split_attribute=split_attribute,
                            holdout_edges=holdout_edges, seed=seed, device=device)

    def report(record):
        mark = "  *" if record["best"] else ""
        click.echo(f"epoch {record['epoch']:>3}  loss {record['loss']:.4f}  train {record['train']:.3f}  "
                   f"valid {record['valid']:.3f}  {record['seconds']:.1f}s{mark}", err=True)

    with progress(None, "training", "nodes") as bar:
        if ogb_root is not None:
            metrics = train_graphsage_ogb(ogb_root, out, config, ogb_split, on_epoch=report, on_batch=bar.update)
        else:
            with open_settings_store(settings_from(ctx)) as store:
                metrics = train_graphsage(store, out, nodes, edges, features, label, config, on_epoch=report,
                                          on_batch=bar.update)
    if as_json:
        emit_json(metrics)
        return
    accuracy = metrics["accuracy"]
    click.echo(f"saved {out} (epoch {metrics['best_epoch']} of {metrics['epochs_run']}): accuracy "
               + " ".join(f"{k} {v:.3f}" for k, v in accuracy.items() if v is not None)
               + f" in {metrics['seconds']}s; metrics in {metrics_path(out)}")
    timing = metrics["timing"]
    click.echo(f"training: {timing['nodes_per_s']:.0f} nodes/s on {metrics['device']}, {timing['step_s']:.3f}s a step; "
               f"sampling {timing['sample_s']:.3f}s of it ({timing['sample_share']:.0%}, "
               f"{timing['wait_s']:.3f}s not hidden behind the step)")


@cli.command("train-movies")
@click.option("--collection", default="movies", show_default=True)
@click.option("--text", "text_attribute", default="description", show_default=True)
@click.option("--relation", "relations", multiple=True, default=("directed_by", "acted_in"), show_default=True,
              help="Edge collection linking movies to people/users (repeatable); has_genre is refused.")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=Path("checkpoints/movie_graph.pth.tar"),
              show_default=True)
@click.option("--epochs", default=60, show_default=True, type=click.IntRange(1))
@click.option("--layers", default=2, show_default=True, type=click.IntRange(1))
@click.option("--lr", "learning_rate", default=1e-3, show_default=True, type=click.FloatRange(0, min_open=True))
@click.option("--seed", default=0, show_default=True)
@json_option
@click.pass_context
def train_movies_command(ctx, collection, text_attribute, relations, out, epochs, layers, learning_rate, seed, as_json):
    """Train the graph-aware movie model self-supervised (hidden movie–person links) on the
    store's catalogue; the checkpoint and OUT.metrics.json."""
    from jobs.train_movies import MovieTrainingConfig, train_movies

    config = MovieTrainingConfig(collection=collection, text=text_attribute, relations=tuple(relations),
                                 epochs=epochs, num_layers=layers, learning_rate=learning_rate, seed=seed)
    with open_settings_store(settings_from(ctx)) as store, progress(None, "encoding", "texts") as bar:
        metrics = train_movies(store, out, config, on_progress=bar.update)
    if as_json:
        emit_json({k: v for k, v in metrics.items() if k != "trained_on"} | {"trained_on": {
            k: v for k, v in metrics["trained_on"].items() if k != "key_hashes"}})
        return
    click.echo(f"saved {out}: {metrics['trained_on']['movies']} movies, links {metrics['trained_on']['links']}, "
               f"loss {metrics['history'][0]['loss']:.3f} → {metrics['history'][-1]['loss']:.3f} in "
               f"{metrics['seconds']['train']}s (+{metrics['seconds']['pull_and_encode']}s pull and encode)")


@cli.command("export-models")
@env_option(env.MODEL_REPOSITORY, "--model-repository", type=click.Path(path_type=Path))
@click.option("--checkpoint", type=click.Path(path_type=Path), default=Path("checkpoints/graphsage_products.pth.tar"),
              show_default=True, help="GraphSAGE checkpoint in the workshop's format.")
@click.option("--graphsage/--no-graphsage", default=True, help="Export the GraphSAGE model.")
@click.option("--text/--no-text", default=True, help="Export the sentence encoder.")
@click.option("--movie-checkpoint", type=click.Path(path_type=Path, dir_okay=False),
              default=Path("checkpoints/movie_graph.pth.tar"), show_default=True,
              help="Graph-aware movie model (jobs train-movies); exported as movie_graph_layerN when the file exists.")
@click.option("--movies/--no-movies", "movies", default=True, help="Export the graph-aware movie model.")
@click.option("--version", default=None, type=click.IntRange(1),
              help="Version number to write [default: the latest + 1; nothing new when the model equals the latest].")
@click.option("--replace", is_flag=True,
              help="Overwrite the version (the latest one unless --version) instead of adding one.")
@click.option("--keep", default=None, type=click.IntRange(1),
              help="Keep only the newest N versions of each exported model [default: keep all].")
@click.option("--instances", default=1, show_default=True, type=click.IntRange(1),
              help="instance_group count in config.pbtxt (model copies Triton runs side by side).")
@click.option("--instance-kind", type=click.Choice(["cpu", "gpu"]), default="cpu", show_default=True,
              help="instance_group kind: gpu writes KIND_GPU, so an NGC tritonserver on a GPU host runs the models "
                   "on the GPU ('graphsvc triton serve' here still runs them on the CPU).")
@click.option("--user-tower", "user_tower", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also export the user tower of this 'jobs train-recommender' checkpoint (as 'user_tower').")
@json_option
def export_command(model_repository, checkpoint, graphsage, text, movie_checkpoint, movies, version, replace, keep,
                   instances, instance_kind, user_tower, as_json):
    """Write TorchScript models and config.pbtxt into the Triton model repository, as new versions."""
    from jobs.export_models import export_models

    exported = export_models(model_repository, checkpoint if graphsage else None, text, version,
                             replace=replace, keep=keep, instances=instances, instance_kind=instance_kind,
                             movie_checkpoint=movie_checkpoint if movies and movie_checkpoint.exists() else None,
                             user_tower_checkpoint=user_tower)
    if as_json:
        emit_json([{"name": m.name, "version": m.version, "path": str(m.path), "source": m.source,
                    "status": m.status, "removed_versions": list(m.removed)} for m in exported])
        return
    for model in exported:
        removed = f"; removed v{', v'.join(map(str, model.removed))}" if model.removed else ""
        click.echo(f"{model.status:<9} {model.name} v{model.version} → {model.path} (from {model.source}){removed}")


@cli.command("embed-products")
@click.option("--nodes", default="products", show_default=True)
@click.option("--edges", default="bought_together", show_default=True)
@click.option("--features", default="features", show_default=True)
@click.option("--model", default="graphsage", show_default=True,
              help="Triton model name (layer-wise mode uses <model>_layer0, _layer1, …).")
@click.option("--mode", type=click.Choice(["layerwise", "sampled"]), default="layerwise", show_default=True,
              help="Full neighbourhoods one layer at a time, or one sampled computation graph per batch.")
@click.option("--top-k", default=10, show_default=True, type=click.IntRange(1, 1000),
              help="Length of each `similar` list.")
@click.option("--batch-size", default=512, show_default=True, type=click.IntRange(1),
              help="Target nodes per request (sampled mode).")
@click.option("--layer-batch-size", default=16_384, show_default=True, type=click.IntRange(1, 65_536),
              help="Nodes per request (layer-wise mode).")
@click.option("--fanouts", default="15,10,5", show_default=True,
              help="Neighbours sampled per hop, -1: all (sampled mode).")
@click.option("--max-in-flight", default=2, show_default=True, type=click.IntRange(1))
@click.option("--keep", default=3, show_default=True, type=click.IntRange(1), help="Index versions to keep.")
@click.option("--arangodb-vector-index", is_flag=True,
              help="Also create an ArangoDB vector index on `embedding` (ArangoDB >= 3.12.4).")
@executor_options
@json_option
@click.pass_context
def embed_products_command(ctx, nodes, edges, features, model, mode, top_k, batch_size, layer_batch_size, fanouts,
                           max_in_flight, keep, arangodb_vector_index, executor, ray_address, partitions, ray_actors,
                           as_json):
    """Embed products with GraphSAGE on Triton, index them, write back, publish."""
    from graphsvc.triton.client import TritonClient
    from jobs.embed_products import EmbedProductsConfig, embed_products

    config = EmbedProductsConfig(nodes=nodes, edges=edges, features=features, model=model, mode=mode, top_k=top_k,
                                 batch_size=batch_size, layer_batch_size=layer_batch_size, fanouts=_fanouts(fanouts),
                                 max_in_flight=max_in_flight, keep=keep, arangodb_vector_index=arangodb_vector_index,
                                 executor=executor, ray_address=ray_address, partitions=partitions,
                                 ray_actors=ray_actors)
    settings = settings_from(ctx)
    with open_settings_store(settings) as store, TritonClient(settings.triton_url) as triton:
        with progress(None, "embedding", "nodes") as bar:
            summary = embed_products(store, triton, settings.index_dir, config, on_progress=bar.update)
    if as_json:
        emit_json(summary)
        return
    click.echo(f"embedded {summary['embedded']} {nodes} ({summary['nodes_per_second']} nodes/s), "
               f"wrote embedding/similar/predicted_category, published index v{summary['index_version']} "
               f"in {summary['seconds']['total']}s")
    if "ray" in summary:
        ray = summary["ray"]
        layers = ", ".join(f"L{layer['layer']} {layer['route']} {layer['bytes_moved'] / 1e6:.1f} MB"
                           for layer in ray["layers"])
        pull = ray.get("pull", {})
        read = (f"pull {pull['node_ranges']} + {pull['edge_ranges']} key ranges, {pull['readers']} readers; "
                if pull.get("where") == "ray" else "")
        click.echo(f"on Ray: {read}{ray['partitions']} partitions ({ray['order']} order), halo {sum(ray['halo'])} "
                   f"rows ({ray['halo_share']:.2f} × nodes); {layers}; write-back {ray['write_back']['shards']} shards")


@cli.command("embed-movies")
@click.option("--collection", default="movies", show_default=True)
@click.option("--text", "text_attribute", default="description", show_default=True, help="Attribute to embed.")
@click.option("--model", "embedding", type=click.Choice(["auto", "text", "graph"]), default="auto", show_default=True,
              help="text: the description's vector; graph: the graph-aware model over it and the movie's people "
                   "(the served movie_graph layers' relations, e.g. directed_by, acted_in); auto: graph when Triton "
                   "serves that model and the catalogue has those edges.")
@click.option("--text-model", "model", default="sentence_encoder", show_default=True,
              help="Triton model name of the sentence encoder.")
@click.option("--graph-model", default="movie_graph", show_default=True,
              help="Triton name of the graph-aware model (<name>_layer0, _layer1, …).")
@click.option("--layer-batch-size", default=16_384, show_default=True, type=click.IntRange(1, 65_536),
              help="Movies per request of the graph-aware layers.")
@click.option("--top-k", default=10, show_default=True, type=click.IntRange(1, 1000))
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1, 64))
@click.option("--max-in-flight", default=2, show_default=True, type=click.IntRange(1))
@click.option("--keep", default=3, show_default=True, type=click.IntRange(1))
@click.option("--arangodb-vector-index", is_flag=True,
              help="Also create an ArangoDB vector index on `embedding` (ArangoDB >= 3.12.4).")
@executor_options
@json_option
@click.pass_context
def embed_movies_command(ctx, collection, text_attribute, embedding, model, graph_model, layer_batch_size, top_k,
                         batch_size, max_in_flight, keep, arangodb_vector_index, executor, ray_address, partitions,
                         ray_actors, as_json):
    """Embed movie descriptions with the sentence encoder on Triton, graph-aware where the
    catalogue has people (embedding, text_embedding), index, write back, publish."""
    from graphsvc.triton.client import TritonClient
    from jobs.embed_movies import EmbedMoviesConfig, embed_movies

    config = EmbedMoviesConfig(collection=collection, text=text_attribute, model=model, top_k=top_k,
                               batch_size=batch_size, max_in_flight=max_in_flight, keep=keep,
                               arangodb_vector_index=arangodb_vector_index, executor=executor,
                               ray_address=ray_address, partitions=partitions, ray_actors=ray_actors,
                               embedding=embedding, graph_model=graph_model, layer_batch_size=layer_batch_size)
    settings = settings_from(ctx)
    with open_settings_store(settings) as store, TritonClient(settings.triton_url) as triton:
        with progress(None, "embedding", "texts") as bar:
            summary = embed_movies(store, triton, settings.index_dir, config, on_progress=bar.update)
    if as_json:
        emit_json(summary)
        return
    if summary["embedding"] == "graph":
        graph = summary["graph"]
        click.echo(f"embedded {summary['embedded']} {collection} graph-aware ({summary['sentences_per_second']} "
                   f"sentences/s, graph layers {graph['movies_per_second']} movies/s; edges {graph['relations']}), "
                   f"wrote embedding/text_embedding/similar, published index v{summary['index_version']} and "
                   f"{graph['text_index']} v{graph['text_index_version']} in {summary['seconds']['total']}s")
        return
    click.echo(f"embedded {summary['embedded']} {collection} ({summary['sentences_per_second']} sentences/s), "
               f"wrote embedding/similar, published index v{summary['index_version']} "
               f"in {summary['seconds']['total']}s")


#: reindex options that say how to compute a target's vectors: each applies to some targets only
_REINDEX_OPTIONS = {
    "products": ("edges", "features", "tolerance"),
    "movies": ("text_attribute", "movie_embedding", "graph_model"),
    "products,movies": ("collection", "layer_batch_size", "rebuild_share", "write_batch", "executor", "ray_address",
                        "partitions", "ray_actors"),
    "users": ("users", "ratings", "rating_attribute", "timestamp_attribute", "checkpoint"),
}


def _refuse_foreign_options(ctx: click.Context, target: str) -> None:
    """An option given on the command line that the target does not use is an error, not
    silently ignored (e.g. `reindex users --edges …`)."""
    flags = {param.name: param.opts[0] for param in ctx.command.params}
    for targets, names in _REINDEX_OPTIONS.items():
        if target in targets.split(","):
            continue
        for name in names:
            if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
                raise ConfigError(f"{flags[name]} does not apply to 'jobs reindex {target}' "
                                  f"(it is an option of reindex {' and '.join(targets.split(','))})")


@cli.command("reindex")
@click.argument("target", type=click.Choice(["products", "movies", "users"]))
@click.option("--collection", default="", help="Collection to re-index [default: the TARGET's name].")
@click.option("--edges", default="bought_together", show_default=True, help="Edge collection (products).")
@click.option("--features", default="features", show_default=True, help="Feature attribute (products).")
@click.option("--text", "text_attribute", default="description", show_default=True, help="Text attribute (movies).")
@click.option("--model", default="", help="Triton model [default: graphsage / sentence_encoder / user_tower].")
@click.option("--embedding", "movie_embedding", type=click.Choice(["auto", "text", "graph"]), default="auto",
              show_default=True, help="Movies: text, graph-aware, or auto (graph when Triton serves --graph-model "
                                      "and the catalogue has its edges), as 'jobs embed-movies --model'.")
@click.option("--graph-model", default="movie_graph", show_default=True,
              help="Movies: Triton name of the graph-aware model (<name>_layer0, …).")
@click.option("--top-k", default=10, show_default=True, type=click.IntRange(1, 1000))
@click.option("--layer-batch-size", default=16_384, show_default=True, type=click.IntRange(1, 65_536))
@click.option("--max-in-flight", default=2, show_default=True, type=click.IntRange(1))
@click.option("--keep", default=3, show_default=True, type=click.IntRange(1), help="Index versions to keep.")
@click.option("--tolerance", default=0.01, show_default=True, type=click.FloatRange(0),
              help="Products: a change smaller than this share of a layer's typical input is not propagated "
                   "(it accumulates per node until it passes); 0 recomputes every node within the model's depth.")
@click.option("--rebuild-share", default=0.25, show_default=True, type=click.FloatRange(0, 1),
              help="Rebuild the index (and all similar lists) when more than this share of vectors moved.")
@click.option("--write-batch", default=250_000, show_default=True, type=click.IntRange(1),
              help="Rows per write-back transaction (each one is journaled: a rerun skips those done).")
@click.option("--full", is_flag=True, help="Recompute everything and rebuild the index.")
@click.option("--dry-run", is_flag=True, help="Report what would be recomputed; change nothing (no Triton needed).")
@click.option("--stale-after", default=600.0, show_default=True, type=click.FloatRange(1),
              help="Seconds without a heartbeat after which another host's lock counts as stale.")
@_rating_options
@click.option("--checkpoint", type=click.Path(path_type=Path, dir_okay=False),
              default=Path("checkpoints/user_tower.pt"), show_default=True,
              help="Users: the user tower checkpoint the served model was exported from.")
@executor_options
@json_option
@click.pass_context
def reindex_command(ctx, target, collection, edges, features, text_attribute, model, movie_embedding, graph_model,
                    top_k, layer_batch_size,
                    max_in_flight, keep, tolerance, rebuild_share, write_batch, full, dry_run, stale_after,
                    users, ratings, rating_attribute, timestamp_attribute, checkpoint,
                    executor, ray_address, partitions, ray_actors, as_json):
    """Re-index TARGET (products, movies or users) incrementally: only what changed since the last run.

    users: each user's `recommended` list, recomputed for the users whose ratings changed
    (`jobs recommend-users`, incremental; all users after a new model or with --full).

    Exit codes: 0 done (or nothing to do), 1 error (one line on stderr), 75 another run
    holds the lock (try later). A killed run leaves its finished batches behind; rerun it.
    """
    _refuse_foreign_options(ctx, target)
    if target == "users":
        from jobs.recommend_users import RecommendUsersConfig

        config = RecommendUsersConfig(users=users, ratings=ratings, rating=rating_attribute,
                                      timestamp=timestamp_attribute, model=model or "user_tower",
                                      checkpoint=checkpoint, top_k=top_k, max_in_flight=max_in_flight, keep=keep,
                                      full=full, stale_after=stale_after)
        _run_recommend_users(settings_from(ctx), config, dry_run, as_json, prefix="users: ")
        return
    from graphsvc.triton.client import TritonClient
    from jobs.reindex import ReindexConfig, reindex

    config = ReindexConfig(target=target, collection=collection, edges=edges, features=features, text=text_attribute,
                           model=model, top_k=top_k, layer_batch_size=layer_batch_size, max_in_flight=max_in_flight,
                           keep=keep, tolerance=tolerance, rebuild_share=rebuild_share, write_batch=write_batch,
                           full=full, dry_run=dry_run, stale_after=stale_after, executor=executor,
                           ray_address=ray_address, partitions=partitions, ray_actors=ray_actors,
                           movie_embedding=movie_embedding, graph_model=graph_model)
    settings = settings_from(ctx)
    with open_settings_store(settings) as store:
        if dry_run:
            summary = reindex(store, None, settings.index_dir, config)
        else:
            with TritonClient(settings.triton_url) as triton, progress(None, "re-embedding", "nodes") as bar:
                summary = reindex(store, triton, settings.index_dir, config, on_progress=bar.update)
    if as_json:
        emit_json(summary)
        return
    if dry_run:
        would = {k: v for k, v in summary.items() if k.startswith(("would", "within"))}
        click.echo(f"{target}: {summary['mode']} run would recompute {would}; new {summary['new']}, "
                   f"removed {summary['removed']} (dry run: nothing changed)")
        return
    click.echo(f"{target}: {summary['mode']} — {summary['documents']} documents, {summary['new']} new, "
               f"{summary['removed']} removed, re-embedded {summary.get('re_embedded', 0)}, "
               f"wrote {summary['written']}, "
               f"index v{summary['index_version']} in {summary['seconds']['total']}s")


@cli.command("evaluate")
@click.argument("target", required=False, default="products", type=click.Choice(["products", "movies", "users"]))
@click.option("--users", "users", default="Users", show_default=True,
              help="users: the users collection (the ratings' _from side).")
@click.option("--ratings", "ratings", default="Ratings", show_default=True,
              help="users: the edge collection of ratings (users → movies, with rating and timestamp).")
@click.option("--nodes", default="products", show_default=True)
@click.option("--edges", default="bought_together", show_default=True)
@click.option("--features", default="features", show_default=True)
@click.option("--label", default="category", show_default=True)
@click.option("--checkpoint", type=click.Path(path_type=Path, dir_okay=False),
              default=Path("checkpoints/graphsage_products.pth.tar"), show_default=True,
              help="The GraphSAGE checkpoint; CHECKPOINT.metrics.json beside it says which split and "
                   "held-out edges training used.")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Report directory [default: var/evaluation/<nodes>].")
@click.option("-k", "--k", "k", default=10, show_default=True, type=click.IntRange(1, 1000))
@click.option("--link-queries", default=2000, show_default=True, type=click.IntRange(1),
              help="Held-out edge ends to rank (a seeded sample when there are more).")
@click.option("--index-sample", default=1000, show_default=True, type=click.IntRange(1),
              help="Stored vectors searched in the published index and exactly.")
@click.option("--projection-sample", default=2000, show_default=True, type=click.IntRange(2))
@click.option("--holdout-edges", default=None, type=click.FloatRange(0, 1, max_open=True),
              help="Share of edges to hold out [default: what the checkpoint's training held out].")
@click.option("--seed", default=0, show_default=True)
@json_option
@click.pass_context
def evaluate_command(ctx, target, users, ratings, nodes, edges, features, label, checkpoint, out, k, link_queries,
                     index_sample, projection_sample, holdout_edges, seed, as_json):
    """Report what the embeddings (TARGET products, the default, or movies) or the user
    recommendations (TARGET users) are worth: report.json + index.html.

    products: category accuracy per split; recall@k of held-out edges ranked by embedding
    similarity, by raw features and by chance; the published index's recall@k against
    exact search; a 2-D PCA of a sample of embeddings coloured by category.

    movies: genre precision@k of similar movies — graph-aware (--checkpoint, default
    checkpoints/movie_graph.pth.tar), text only, text + co-person mean, random — on the
    store's catalogue (one the model was not trained on), genres withheld from the model.

    users: leave-one-out hit rate@k and NDCG@k of each user's latest rating for the user
    tower, popularity and item-kNN (tuned on a validation split), same split, same run.
    """
    if target == "movies":
        _evaluate_movies(ctx, nodes, checkpoint, out, k, seed, as_json)
        return
    from jobs.evaluate import EvaluateConfig, evaluate

    settings = settings_from(ctx)
    if target == "users":
        _evaluate_users(settings, users, ratings, out, k, seed, as_json)
        return
    config = EvaluateConfig(nodes=nodes, edges=edges, features=features, label=label, checkpoint=checkpoint,
                            out=out or Path("var/evaluation") / nodes, k=k, link_queries=link_queries,
                            index_sample=index_sample, projection_sample=projection_sample,
                            holdout_edges=holdout_edges, seed=seed)
    with open_settings_store(settings) as store:
        report = evaluate(store, Path(settings.index_dir), config)
    for note in report["notes"]:
        click.echo(f"note: {note}", err=True)
    if as_json:
        emit_json(report)
        return
    accuracy = report["category_accuracy"]["splits"]
    click.echo("category accuracy " + ", ".join(f"{name} {row['accuracy']:.3f}" for name, row in accuracy.items()
                                               if row["accuracy"] is not None))
    link = report["link_prediction"]
    if link.get("skipped"):
        click.echo(f"link recall skipped: {link['skipped']}")
    else:
        click.echo(f"recall@{k} of {link['held_out_edges']} held-out {edges} edges: " + ", ".join(
            f"{name} {row['recall_at_k']:.3f}" for name, row in link["rankings"].items()))
    index = report["index"]
    click.echo(f"index recall@{k}: skipped ({index['skipped']})" if index.get("skipped") else
               f"index recall@{k} v{index['version']} ({index['kind']}, nprobe {index['nprobe']}) vs exact: "
               f"{index['recall_at_k']:.3f}")
    click.echo(f"report: {report['files']['index.html']}")


def _evaluate_movies(ctx, nodes, checkpoint, out, k, seed, as_json) -> None:
    from jobs.evaluate_movies import EvaluateMoviesConfig, evaluate_movies

    collection = "movies" if nodes == "products" else nodes
    if checkpoint.name == "graphsage_products.pth.tar":  # the products default: the movies' own instead
        checkpoint = Path("checkpoints/movie_graph.pth.tar")
    config = EvaluateMoviesConfig(collection=collection, checkpoint=checkpoint, k=k, seed=seed,
                                  out=out or Path("var/evaluation") / collection)
    with open_settings_store(settings_from(ctx)) as store, progress(None, "encoding", "texts") as bar:
        report = evaluate_movies(store, config, on_progress=bar.update)
    for note in report["notes"]:
        click.echo(f"note: {note}", err=True)
    if as_json:
        emit_json(report)
        return
    click.echo(f"genre precision@{k} on {report['num_nodes']} movies: " + ", ".join(
        f"{name} {row['precision_at_k']:.3f}" for name, row in report["genre_precision"].items()))
    click.echo(f"graph-aware − text only: {report['graph_minus_text_points']:+.2f} points; "
               f"report: {report['files']['index.html']}")


def _evaluate_users(settings, users, ratings, out, k, seed, as_json) -> None:
    from graphsvc.recommend.training import TrainSettings
    from jobs.evaluate_users import EvaluateUsersConfig, evaluate_users

    config = EvaluateUsersConfig(users=users, ratings=ratings, out=out or Path("var/evaluation") / users, k=k,
                                 settings=TrainSettings(seed=seed))
    with open_settings_store(settings) as store:
        report = evaluate_users(store, config)
    if as_json:
        emit_json(report)
        return
    for name, row in report["methods"].items():
        click.echo(f"{name:<11} hit rate@{k} {row['hit_rate']:.4f}  NDCG@{k} {row['ndcg']:.4f}  ({row['users']} users)")
    click.echo(f"report: {report['files']['index.html']}")


@cli.command("train-recommender")
@_rating_options
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=Path("checkpoints/user_tower.pt"),
              show_default=True, help="Where the checkpoint goes.")
@click.option("--dim", default=32, show_default=True, type=click.IntRange(2), help="Vector width.")
@click.option("--history", default=100, show_default=True, type=click.IntRange(1),
              help="Latest ratings a user vector is made of.")
@click.option("--max-steps", default=3000, show_default=True, type=click.IntRange(1))
@click.option("--seed", default=0, show_default=True)
@json_option
@click.pass_context
def train_recommender_command(ctx, users, ratings, rating_attribute, timestamp_attribute, out, dim, history, max_steps,
                              seed, as_json):
    """Train the user tower on the ratings (early-stopped on each user's latest rating)."""
    from graphsvc.recommend.training import TrainSettings
    from jobs.train_recommender import TrainRecommenderConfig, train_recommender

    config = TrainRecommenderConfig(users=users, ratings=ratings, rating=rating_attribute,
                                    timestamp=timestamp_attribute, out=out,
                                    settings=TrainSettings(dim=dim, history=history, max_steps=max_steps, seed=seed))
    with open_settings_store(settings_from(ctx)) as store:
        summary = train_recommender(store, config)
    if as_json:
        emit_json(summary)
        return
    valid = summary["validation"]
    click.echo(f"trained on {summary['ratings']} ratings of {summary['users']} users ({summary['movies']} movies) in "
               f"{summary['seconds']}s: validation hit rate@10 {valid['hit_rate']:.4f}, NDCG@10 {valid['ndcg']:.4f} "
               f"at step {summary['best_step']} → {out}; serve it with 'jobs export-models --user-tower {out}'")


@cli.command("recommend-users")
@_rating_options
@click.option("--model", default="user_tower", show_default=True, help="The Triton model computing user vectors.")
@click.option("--checkpoint", type=click.Path(path_type=Path, dir_okay=False),
              default=Path("checkpoints/user_tower.pt"), show_default=True,
              help="The checkpoint the served model was exported from (its movie vectors and popularity).")
@click.option("--top-k", default=10, show_default=True, type=click.IntRange(1, 1000),
              help="Length of each `recommended` list.")
@click.option("--batch-size", default=1024, show_default=True, type=click.IntRange(1, 4096),
              help="Users per Triton request.")
@click.option("--max-in-flight", default=2, show_default=True, type=click.IntRange(1))
@click.option("--keep", default=3, show_default=True, type=click.IntRange(1), help="Artifact versions to keep.")
@click.option("--full", is_flag=True, help="Recompute every user, not only those whose ratings changed.")
@click.option("--stale-after", default=600.0, show_default=True, type=click.FloatRange(1),
              help="Seconds without a heartbeat after which another host's lock counts as stale.")
@json_option
@click.pass_context
def recommend_users_command(ctx, users, ratings, rating_attribute, timestamp_attribute, model, checkpoint, top_k,
                            batch_size, max_in_flight, keep, full, stale_after, as_json):
    """Each user's top k unrated movies (user vectors on Triton): write back `recommended`, publish.

    Incremental: only users whose ratings changed since the last published version are
    computed and written (all of them after a new model or with --full). One run at a time
    per users collection (shared with 'jobs reindex users'): exit 75 while another holds it."""
    from jobs.recommend_users import RecommendUsersConfig

    config = RecommendUsersConfig(users=users, ratings=ratings, rating=rating_attribute,
                                  timestamp=timestamp_attribute, model=model, checkpoint=checkpoint, top_k=top_k,
                                  batch_size=batch_size, max_in_flight=max_in_flight, keep=keep, full=full,
                                  stale_after=stale_after)
    _run_recommend_users(settings_from(ctx), config, dry_run=False, as_json=as_json)


def _run_recommend_users(settings, config, dry_run: bool, as_json: bool, prefix: str = "") -> None:
    """`jobs recommend-users` and `jobs reindex users`: one job, one lock, one summary line."""
    from graphsvc.triton.client import TritonClient
    from jobs.recommend_users import plan_recommendations, recommend_users

    with open_settings_store(settings) as store:
        if dry_run:
            summary = plan_recommendations(store, settings.index_dir, config)
        else:
            with TritonClient(settings.triton_url) as triton, progress(None, "recommending", "users") as bar:
                summary = recommend_users(store, triton, settings.index_dir, config, on_progress=bar.update)
    if as_json:
        emit_json(summary)
        return
    why = f" ({summary['full_because']})" if summary["full_because"] else ""
    if dry_run:
        click.echo(f"{prefix}{summary['mode']}{why} run would compute {summary['would_compute_users']} of "
                   f"{summary['num_users']} {config.users} ({summary['would_embed_users']} through the model, "
                   f"{summary['would_answer_popular']} popular; a newly exported model version is not seen here), "
                   f"write {summary['would_rewrite_users']} unchanged lists again "
                   f"(dry run: nothing changed)")
        return
    sources = ", ".join(f"{count} {source}" for source, count in summary["by_source"].items())
    again = f" ({summary['rewritten_users']} the same again: their documents were replaced since)" \
        if summary["rewritten_users"] else ""
    click.echo(f"{prefix}{summary['mode']}{why}: computed {summary['computed_users']} of {summary['num_users']} "
               f"{config.users} ({summary['users_per_second'] or '-'} users/s), wrote {summary['written']} "
               f"`recommended` lists{again}; {sources} overall; "
               f"{'published' if summary['published'] else 'unchanged'} {summary['artifact']} "
               f"v{summary['index_version']} in {summary['seconds']['total']}s")


def main() -> None:
    cli(prog_name="jobs")


if __name__ == "__main__":
    main()
