"""``rainlocal models``: list the catalogue, pull and remove models, inspect GGUF files.

Results go to stdout (``models path`` prints nothing but the path, so ``$(rainlocal models path X)``
works); progress, notes and warnings go to stderr. Errors are raised as rainlocal's domain
exceptions and reported by ``rainlocal.cli.main``: an unknown alias exits with 2 (usage), a broken
models.toml, a failed download, a bad GGUF file or a model missing from ollama's store or the
Hugging Face cache with 1.
"""

from __future__ import annotations

import json
from typing import Any

import click

from rainlocal import catalog, paths
from rainlocal.gguf_info import read_info


@click.group("models")
def models_group() -> None:
    """List, pull, remove and inspect local GGUF models."""


def _entry_row(cat: catalog.Catalog, entry: catalog.ModelEntry) -> dict[str, Any]:
    return {
        "alias": entry.alias,
        "default": entry.alias == cat.default,
        "file": entry.file,
        "size": entry.size,
        "sha256": entry.sha256,
        "license": entry.license,
        "description": entry.description,
        "pulled": catalog.is_pulled(entry),
        "path": str(catalog.entry_path(entry)),
        "source": entry.source,
    }


def _stored_row(model: catalog.StoredModel) -> dict[str, Any]:
    """A model found in ollama's store or the Hugging Face cache, in the catalogue rows' shape."""
    return {
        "alias": model.name,
        "default": False,
        "file": model.path.name,
        "size": model.size,
        "sha256": None,
        "license": "",
        "description": "",
        "pulled": True,
        "path": str(model.path),
        "source": {"type": model.store},
    }


@models_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the catalogue as JSON.")
@click.option("--all", "show_all", is_flag=True,
              help="Also list the GGUF models in ollama's store and the Hugging Face cache (usable with -m).")
def list_command(as_json: bool, show_all: bool) -> None:
    """Show the model catalogue and which models are pulled."""
    cat = catalog.load_catalog()
    rows = [_entry_row(cat, entry) for entry in cat.entries.values()]
    stored = [_stored_row(model) for model in catalog.find_stored()] if show_all else []
    if as_json:
        click.echo(json.dumps(rows + stored, indent=2))
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(
        box=box.SIMPLE_HEAD,
        caption=f"models directory: {paths.models_dir()}\nyour own entries: {paths.user_catalog_file()}",
        caption_justify="left",
    )
    for column in ("alias", "default", "size", "license", "pulled", "description"):
        table.add_column(column, no_wrap=column != "description")
    for row in rows:
        table.add_row(
            row["alias"],
            "*" if row["default"] else "",
            catalog.format_size(row["size"]),
            row["license"],
            "yes" if row["pulled"] else "no",
            row["description"],
        )
    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = 160  # piped or redirected: keep one line per model instead of 80 columns
    console.print(table)
    if show_all:
        _print_stored(console, stored)


def _print_stored(console: Any, rows: list[dict[str, Any]]) -> None:
    """The models found in other programs' stores, then where they were looked for."""
    from rich import box
    from rich.table import Table

    from rainlocal.catalog import hf_cache, ollama_store

    if rows:
        table = Table(box=box.SIMPLE_HEAD, title="in other stores (used in place, read-only)")
        table.add_column("name (-m)", no_wrap=True, min_width=max(len(row["alias"]) for row in rows))
        table.add_column("size", no_wrap=True, min_width=9)
        table.add_column("path", overflow="fold")
        for row in rows:
            table.add_row(row["alias"], catalog.format_size(row["size"]), row["path"])
        console.print(table)
    else:
        console.print("no GGUF models in ollama's store or the Hugging Face cache")
    console.print(f"ollama store: {' or '.join(str(r) for r in ollama_store.roots())} (OLLAMA_MODELS)", soft_wrap=True)
    console.print(f"Hugging Face cache: {hf_cache.root()} (HF_HUB_CACHE, HF_HOME)", soft_wrap=True)


@models_group.command("pull")
@click.argument("alias")
@click.option("--force", is_flag=True, help="Download again even if the model is already pulled.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
def pull_command(alias: str, force: bool, quiet: bool) -> None:
    """Download a catalogue model (verified by sha256) and print where it is."""
    catalog.refuse_store_reference(alias, "pull")
    entry = catalog.load_catalog().get(alias)
    if catalog.is_pulled(entry) and not force and not quiet:
        click.echo(f"{alias} is already pulled", err=True)
    click.echo(str(catalog.pull(alias, quiet=quiet, force=force)))


@models_group.command("path")
@click.argument("alias")
def path_command(alias: str) -> None:
    """Print the model's file path (pulling it first if needed; progress goes to stderr)."""
    click.echo(str(catalog.resolve_model(alias)))


@models_group.command("rm")
@click.argument("alias")
def rm_command(alias: str) -> None:
    """Delete a pulled model file (and any partial download)."""
    catalog.refuse_store_reference(alias, "delete")
    if catalog.remove(alias):
        click.echo(f"removed {alias}")
    else:
        click.echo(f"{alias} was not pulled")


_INFO_LABELS = (
    ("path", "path"),
    ("architecture", "architecture"),
    ("name", "name"),
    ("parameters", "parameters"),
    ("context_length", "context length"),
    ("quantization", "quantization"),
    ("has_chat_template", "chat template"),
    ("vocab_size", "vocabulary"),
    ("n_tensors", "tensors"),
    ("file_size", "file size"),
    ("gguf_version", "GGUF version"),
)


def _format_value(key: str, value: Any) -> str:
    if value is None:
        return "unknown"
    if key == "has_chat_template":
        return "yes" if value else "no (a base model, or a template must be given)"
    if key == "file_size":
        return f"{catalog.format_size(value)} ({value} bytes)"
    if key == "parameters":
        return f"{value / 1e9:.2f} B" if value >= 1e9 else f"{value / 1e6:.1f} M"
    return str(value)


@models_group.command("info")
@click.argument("model", metavar="PATH_OR_ALIAS")
@click.option("--json", "as_json", is_flag=True, help="Print the fields as JSON.")
def info_command(model: str, as_json: bool) -> None:
    """Show what a GGUF model is: architecture, size, context length, quantization, chat template, and
    where its latent-judge probes come from."""
    path = catalog.resolve_model(model, pull=False)
    info = read_info(path)
    info["latent_probes"] = _probes_info(path)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    width = max(len(label) for _, label in _INFO_LABELS + (("", "latent probes"),))
    for key, label in _INFO_LABELS:
        click.echo(f"{label:<{width}}  {_format_value(key, info.get(key))}")
    click.echo(f"{'latent probes':<{width}}  {_format_probes(info['latent_probes'], path)}")


def _probes_info(path) -> dict[str, Any]:
    """The latent judge's probes for this file: where from, which layer, their cross-validated agreement
    with people's labels, whether the search may use them; for a file without, a first-use fit's remembered
    projection (``first_fit``)."""
    from rainlocal.cli.first_fit import known_projection
    from rainlocal.gguf_info import content_fingerprint
    from rainlocal.latent.probes import locate_probes

    status, file, probes = locate_probes(path)
    if probes is None:
        return {"status": "none", "projected_fit_s": known_projection(content_fingerprint(path))}
    usable, why = probes.usable()
    m = probes.metrics
    harm = "judged_people" if "judged_people" in m else "product_people"  # the harm the search scores
    return {"status": status, "file": str(file), "layer": probes.layer, "usable": usable, "why_not": why or None,
            "request_auc": m.get("request", {}).get("auc"),
            "harm_auc": m.get(harm, {}).get("auc"), "harm_kappa": m.get(harm, {}).get("kappa")}


def _format_probes(p: dict[str, Any], path) -> str:
    if p["status"] == "none":
        from rainlocal.cli.first_fit import minutes

        seen = f" (a fit here was projected at {minutes(p['projected_fit_s'])})" if p.get("projected_fit_s") else ""
        return (f"none; fitted on the first latent answer in a terminal if that takes less than "
                f"RAINLOCAL_FIT_BUDGET{seen}, or now with `rainlocal calibrate -m {path}`")
    agree = ", ".join(f"{name} {p[k]:.2f}" for name, k in (("request AUC", "request_auc"), ("harm AUC", "harm_auc"),
                                                         ("harm kappa", "harm_kappa")) if p.get(k) is not None)
    text = f"{p['status']}, layer {p['layer']} ({agree}, cross-validated against people's labels)"
    return text if p["usable"] else f"{text}; not used: {p['why_not']}"
