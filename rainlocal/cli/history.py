"""``rainlocal history``: the saved chat conversations (list, show, rm)."""

from __future__ import annotations

import json
import time

import click

from rainlocal import conversations


@click.group("history", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per conversation.")
@click.option("-n", "--limit", type=int, default=None, help="Only the N most recent conversations.")
@click.pass_context
def command(ctx: click.Context, as_json: bool, limit: int | None) -> None:
    """List saved chat conversations, most recent first (`history show ID` prints one)."""
    if ctx.invoked_subcommand is not None:
        return
    items = conversations.list_conversations(limit=None if limit is None else max(0, limit))
    if as_json:
        for s in items:
            c = s.conversation
            obj = {"id": s.id, "path": str(s.path), "updated": _iso(s.updated)}
            if c is None:
                obj["error"] = s.error
            else:
                obj.update(created=c.created, model=c.model, turns=c.turns, title=c.title(200))
            click.echo(json.dumps(obj, ensure_ascii=False))
        return
    if not items:
        click.echo("no saved conversations yet (rainlocal chat saves each one)", err=True)
        return
    width = max(len(s.id) for s in items)
    click.echo(f"{'ID':<{width}}  {'UPDATED':<16}  {'TURNS':>5}  {'MODEL':<32}  FIRST MESSAGE")
    for s in items:
        c = s.conversation
        updated = time.strftime("%Y-%m-%d %H:%M", time.localtime(s.updated))
        if c is None:
            click.echo(f"{s.id:<{width}}  {updated:<16}  {'?':>5}  {'':<32}  (unreadable: {s.error})")
            continue
        model = c.model if len(c.model) <= 32 else c.model[:31] + "…"
        click.echo(f"{s.id:<{width}}  {updated:<16}  {c.turns:>5}  {model:<32}  {c.title(50)}")


@command.command("show")
@click.argument("conversation_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="The conversation as one JSON object (messages with their stats).")
def show(conversation_id: str, as_json: bool) -> None:
    """Print conversation ID (an id, a unique prefix of one, or `last`) as Markdown."""
    conv = conversations.find(conversation_id)
    if as_json:
        click.echo(json.dumps(conv.to_json(), ensure_ascii=False, indent=2))
    else:
        click.echo(conv.to_markdown(), nl=False)


@command.command("path")
@click.argument("conversation_id", metavar="ID")
def path(conversation_id: str) -> None:
    """Print the JSONL file of conversation ID."""
    click.echo(str(conversations.find(conversation_id).path))


@command.command("rm")
@click.argument("conversation_id", metavar="ID")
def rm(conversation_id: str) -> None:
    """Delete conversation ID."""
    conv = conversations.find(conversation_id)
    conv.path.unlink()
    click.echo(f"deleted {conv.id}", err=True)


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(ts))
