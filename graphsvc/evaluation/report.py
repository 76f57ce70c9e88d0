"""The evaluation report on disk: `report.json`, `index.html` and its PNG figures.

Figures are drawn with matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from graphsvc.files import atomic_path, write_text

REPORT_JSON = "report.json"
REPORT_HTML = "index.html"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> str:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    return path.name


def accuracy_figure(accuracy: dict[str, dict], path: Path) -> str:
    plt = _pyplot()
    names = [name for name, row in accuracy.items() if row.get("accuracy") is not None]
    values = [accuracy[name]["accuracy"] for name in names]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    bars = ax.bar(names, values, color=["#4c72b0", "#dd8452", "#55a868"][: len(names)])
    ax.bar_label(bars, labels=[f"{v:.3f}" for v in values])
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("category accuracy")
    ax.set_title("Category accuracy per split")
    return _save(fig, path)


def link_recall_figure(link: dict[str, dict], k: int, path: Path) -> str:
    plt = _pyplot()
    names = list(link)
    values = [link[name]["recall_at_k"] for name in names]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    bars = ax.bar(names, values, color=["#4c72b0", "#8c8c8c", "#c44e52"][: len(names)])
    ax.bar_label(bars, labels=[f"{v:.3f}" for v in values])
    ax.set_ylim(0, max(values + [0.01]) * 1.2)
    ax.set_ylabel(f"recall@{k}")
    ax.set_title(f"Held-out edges found in the top {k}")
    return _save(fig, path)


def projection_figure(points: np.ndarray, categories: np.ndarray, title: str, path: Path) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    classes = np.unique(categories)
    colours = plt.get_cmap("tab20", max(len(classes), 1))
    for number, category in enumerate(classes):
        chosen = categories == category
        ax.scatter(points[chosen, 0], points[chosen, 1], s=6, alpha=0.7, color=colours(number % 20),
                   label=str(category) if len(classes) <= 20 else None)
    if len(classes) <= 20:
        ax.legend(title="category", fontsize=7, markerscale=2, loc="best", ncol=2)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(title)
    return _save(fig, path)


def training_figure(history: list[dict], path: Path) -> str:
    plt = _pyplot()
    epochs = [row["epoch"] for row in history]
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    ax.plot(epochs, [row["valid"] for row in history], marker="o", label="valid accuracy")
    ax.plot(epochs, [row["train"] for row in history], marker=".", label="train accuracy (batches)")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("epoch")
    ax.set_title("Training")
    loss = ax.twinx()
    loss.plot(epochs, [row["loss"] for row in history], color="#c44e52", linestyle="--", label="loss")
    loss.set_ylabel("loss")
    ax.legend(loc="center right", fontsize=8)
    return _save(fig, path)


def precision_figure(rankings: dict[str, dict], k: int, path: Path) -> str:
    plt = _pyplot()
    names = list(rankings)
    values = [rankings[name]["precision_at_k"] for name in names]
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    bars = ax.barh(names, values, color=["#4c72b0", "#dd8452", "#55a868", "#8c8c8c", "#8172b2"][: len(names)])
    ax.bar_label(bars, labels=[f"{v:.3f}" for v in values])
    ax.set_xlim(0, 1.1)
    ax.invert_yaxis()
    ax.set_xlabel(f"genre precision@{k}")
    ax.set_title(f"Similar movies sharing a genre (top {k})")
    return _save(fig, path)


def _table(rows: list[list[Any]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "—" if value is None else str(value)


def _users_html(report: dict) -> list[str]:
    """The user recommendations' section: every method on the same leave-one-out split."""
    k = report["k"]
    parts = [f"<h1>Evaluation of recommendations for {html.escape(report['users'])}</h1>",
             f"<p>{report['num_users']:,} users, {report['num_movies']:,} movies, {report['num_ratings']:,} "
             f"ratings in {html.escape(report['ratings'])}, generated {html.escape(report['created_at'])}</p>",
             f"<h2>Hit rate@{k} and NDCG@{k} of held-out ratings</h2>", f"<p>{html.escape(report['note'])}</p>",
             _table([[name, row["hit_rate"], row["ndcg"], row["users"]] for name, row in report["methods"].items()],
                    ["method", f"hit rate@{k}", f"NDCG@{k}", "users"])]
    chosen = report["item_knn_tuning"]["chosen"]
    parts.append(f"<p>item-kNN tuned on validation: {chosen['neighbours'] or 'all'} neighbours, shrinkage "
                 f"{chosen['shrink']:g}; the tower stopped at step {report['training']['best_step']}.</p>")
    return parts


def render_html(report: dict) -> str:
    if report.get("target") == "users":
        return _page(report["users"], _users_html(report))
    k = report["k"]
    parts = [f"<h1>Evaluation of {html.escape(report['nodes'])}</h1>",
             f"<p>checkpoint <code>{html.escape(report['checkpoint'])}</code>, "
             f"{report['num_nodes']:,} nodes, {report['num_edges']:,} edges, "
             f"generated {html.escape(report['created_at'])}</p>"]
    if report["notes"]:
        parts.append("<ul class='notes'>" + "".join(f"<li>{html.escape(n)}</li>" for n in report["notes"]) + "</ul>")
    accuracy = report["category_accuracy"]
    parts.append("<h2>Category accuracy per split</h2>")
    parts.append(f"<p>{html.escape(accuracy['note'])}</p>")
    parts.append(_table([[name, row["count"], row["accuracy"]] for name, row in accuracy["splits"].items()],
                        ["split", "nodes", "accuracy"]))
    link = report["link_prediction"]
    parts.append(f"<h2>Recall@{k} of held-out edges</h2>")
    if link.get("skipped"):
        parts.append(f"<p>skipped: {html.escape(link['skipped'])}</p>")
    else:
        parts.append(f"<p>{html.escape(link['note'])}</p>")
        parts.append(_table([[name, row["recall_at_k"], row["hits"], row["queries"]]
                             for name, row in link["rankings"].items()],
                            ["ranking by", f"recall@{k}", "hits", "queries"]))
    index = report["index"]
    parts.append(f"<h2>Index recall@{k} against exact search</h2>")
    if index.get("skipped"):
        parts.append(f"<p>skipped: {html.escape(index['skipped'])}</p>")
    else:
        parts.append(_table([[index["version"], index["kind"], index["metric"], index["nlist"], index["nprobe"],
                              index["sample"], index["recall_at_k"]]],
                            ["version", "kind", "metric", "nlist", "nprobe", "queries", f"recall@{k}"]))
    for figure in report["figures"].values():
        parts.append(f'<figure><img src="{html.escape(figure["file"])}" alt="{html.escape(figure["title"])}">'
                     f"<figcaption>{html.escape(figure['title'])}</figcaption></figure>")
    return _page(report["nodes"], parts)


def _page(title: str, parts: list[str]) -> str:
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;"
             "text-align:right}figure{display:inline-block;margin:1em}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>graphsvc evaluation — "
            f"{html.escape(title)}</title><style>{style}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")


def render_movies_html(report: dict) -> str:
    """The movies report: genre precision@k of each ranking, the held-out check, notes."""
    k = report["k"]
    held = report["held_out"]
    held_line = (f"{held['movies_seen_in_training']} of these movies were in the training catalogue "
                 f"({held['training_movies']:,} movies)" if held.get("known") else "training catalogue not known")
    parts = [f"<h1>Evaluation of {html.escape(report['nodes'])}: graph-aware similar movies</h1>",
             f"<p>checkpoint <code>{html.escape(report['checkpoint'])}</code> (relations "
             f"{html.escape(', '.join(report['relations']))}; withheld {html.escape(', '.join(report['withheld']))}), "
             f"{report['num_nodes']:,} movies, {report['movies_with_genre']:,} with a genre; {html.escape(held_line)}; "
             f"generated {html.escape(report['created_at'])}</p>"]
    if report["notes"]:
        parts.append("<ul class='notes'>" + "".join(f"<li>{html.escape(n)}</li>" for n in report["notes"]) + "</ul>")
    parts.append(f"<h2>Genre precision@{k}</h2><p>{html.escape(report['note'])}</p>")
    rows = [[name, row["precision_at_k"], row["queries"]] for name, row in report["genre_precision"].items()]
    parts.append(_table(rows, ["ranking", f"precision@{k}", "queries"]))
    parts.append(f"<p>graph-aware − text only: <b>{report['graph_minus_text_points']:+.2f} points</b></p>")
    for figure in report["figures"].values():
        parts.append(f'<figure><img src="{html.escape(figure["file"])}" alt="{html.escape(figure["title"])}">'
                     f"<figcaption>{html.escape(figure['title'])}</figcaption></figure>")
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;"
             "text-align:right}figure{display:inline-block;margin:1em}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>graphsvc evaluation — "
            f"{html.escape(report['nodes'])}</title><style>{style}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")


def write_report(out: Path, report: dict, render: Callable[[dict], str] | None = None) -> dict[str, Path]:
    """report.json and index.html, drawn by `render` (default: the products report); the
    figures are already in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    pages = ((REPORT_JSON, json.dumps(report, indent=2) + "\n"), (REPORT_HTML, (render or render_html)(report)))
    for name, text in pages:
        written[name] = write_text(out / name, text)
    return written
