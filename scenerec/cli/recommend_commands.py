"""Commands about users: recommend, users, demo."""

from __future__ import annotations

import click

from ..paths import DataPaths, demo_catalog_dir
from ..recommend.recommender import Recommender, pick_demo_user
from ..recommend.why import breakdown, breakdown_lines
from ..settings import Settings
from ..stores.ingest import ingest_catalog
from .common import common_options, emit_json, format_recommendations


@click.command()
@click.option("--user", "user_id", required=True, help="User id.")
@click.option("--scene", required=True, help="Target scene.")
@click.option("-k", "k", type=int, default=10, show_default=True, help="Number of recommendations.")
@click.option("--explain", is_flag=True, help="Rerank with the LLM and add an `explanation` to each item.")
@click.option("--backend", help="LLM backend for --explain: transformers, vllm, openai, llamacpp, fake.")
@click.option("-m", "--model", help="LLM for --explain: a local .gguf file or model folder (openai: a model name).")
@click.option("--why", "why_item", metavar="ITEM", help="Show the full breakdown of why ITEM is recommended.")
@common_options
def recommend(
    settings: Settings, as_json: bool, user_id: str, scene: str, k: int, explain: bool,
    backend: str | None, model: str | None, why_item: str | None,
) -> None:
    """Recommend K items of SCENE for a user, each with the history items that explain it."""
    if (backend or model) and not explain:
        raise click.UsageError("--backend and --model choose the LLM of --explain; add --explain")
    with Recommender.open(settings=settings) as recommender:
        if why_item is not None:
            found = breakdown(recommender, recommender.history(user_id), scene, why_item)
            if as_json:
                emit_json(found)
            else:
                click.echo("\n".join(breakdown_lines(found)))
            return
        if explain:
            from ..llm import make_backend

            updates = {key: value for key, value in (("backend", backend), ("model", model)) if value}
            llm_settings = settings.llm.model_copy(update=updates)
            recommender.check_scene(scene)
            history = recommender.history(user_id)  # unknown users fail before a model loads
            with make_backend(llm_settings) as llm:
                result = recommender.recommend_explained(user_id, scene, k, llm, llm_settings, history=history)
            recommendations = result.recommendations
        else:
            recommendations = recommender.recommend(user_id, scene, k)
    if as_json:
        emit_json(recommendations)
    else:
        click.echo(format_recommendations(recommendations))


@click.command()
@click.option("--limit", type=int, default=20, show_default=True)
@common_options
def users(settings: Settings, as_json: bool, limit: int) -> None:
    """List users with their history size per scene."""
    with Recommender.open(settings=settings) as recommender:
        rows = {u: recommender.history(u).scene_counts() for u in recommender.items.users(limit)}
    if as_json:
        emit_json(rows)
        return
    for user_id, counts in rows.items():
        click.echo(f"{user_id:<16} " + "  ".join(f"{s}: {n}" for s, n in sorted(counts.items())))


@click.command()
@click.option("-k", "k", type=int, default=5, show_default=True)
@common_options
def demo(settings: Settings, as_json: bool, k: int) -> None:
    """Ingest the shipped demo catalog (once) and show explained recommendations for a demo user."""
    if not DataPaths(settings.data_dir).catalog_db.exists():
        click.echo(f"ingesting the demo catalog into {settings.data_dir} …", err=True)
        ingest_catalog(demo_catalog_dir(), settings)
    with Recommender.open(settings=settings) as recommender:
        user_id, scene = pick_demo_user(recommender)
        history = recommender.history(user_id)
        recommendations = recommender.recommend(user_id, scene, k)
    if as_json:
        emit_json({"user_id": user_id, "scene": scene,
                   "recommendations": [r.model_dump(mode="json") for r in recommendations]})
        return
    counts = ", ".join(f"{n} in {s}" for s, n in sorted(history.scene_counts().items()))
    click.echo(f"user {user_id} (history: {counts}) — recommendations in '{scene}':\n")
    click.echo(format_recommendations(recommendations))
