"""MkDocs hook: the reference pages generated from the code, so they cannot drift from it.

`<!-- settings -->` becomes the configuration table (the `Settings` class: names, defaults,
limits, descriptions), `<!-- cli -->` the help of every `crew-etl` command, `<!-- openapi -->`
the endpoints of the OpenAPI document. tests/test_docs_site.py checks the same functions.
"""

import os
from pathlib import Path
from typing import Any

import click
from pydantic.fields import FieldInfo

PROJECT = Path(__file__).resolve().parent.parent


def default_text(name: str, field: FieldInfo) -> str:
    if field.default is None:
        return "unset"
    if isinstance(field.default, Path):
        return f"`{field.default.relative_to(PROJECT)}`"
    if isinstance(field.default, bool):
        return f"`{str(field.default).lower()}`"
    return f"`{field.default}`"


def limits_text(field: FieldInfo) -> str:
    words = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    found = [
        f"{words[key]} {getattr(rule, key)}"
        for rule in field.metadata
        for key in words
        if getattr(rule, key, None) is not None
    ]
    return ", ".join(found)


def settings_table() -> str:
    from app.config import Settings

    rows = ["| variable | default | allowed | meaning |", "| --- | --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        meaning = (field.description or "").replace("|", "\\|")
        rows.append(
            f"| `{name}` | {default_text(name, field)} | {limits_text(field)} | {meaning} |"
        )
    return "\n".join(rows)


def cli_reference() -> str:
    import typer.main

    from app.cli import cli

    group = typer.main.get_command(cli)
    parts = []
    for name, command in sorted(group.commands.items()):  # type: ignore[attr-defined]
        context = click.Context(command, info_name=f"crew-etl {name}", terminal_width=100)
        parts.append(f"## crew-etl {name}\n\n```\n{plain_help(command, context)}\n```\n")
    return "\n".join(parts)


def plain_help(command: click.Command, context: click.Context) -> str:
    """Help text without rich's boxes and colours (typer renders with rich when it can)."""
    formatter = click.HelpFormatter(width=100)
    click.Command.format_usage(command, context, formatter)
    if command.help:
        formatter.write_paragraph()
        formatter.write_text(command.help.strip())
    click.Command.format_options(command, context, formatter)
    return formatter.getvalue().rstrip()


def openapi_table() -> str:
    from app.main import app

    rows = ["| method | path | summary |", "| --- | --- | --- |"]
    for path, operations in app.openapi()["paths"].items():
        for method, operation in operations.items():
            summary = operation.get("summary", "").replace("|", "\\|")
            rows.append(f"| `{method.upper()}` | `{path}` | {summary} |")
    return "\n".join(rows)


GENERATED = {"<!-- settings -->": settings_table, "<!-- cli -->": cli_reference}
GENERATED["<!-- openapi -->"] = openapi_table


def on_page_markdown(markdown: str, **_: Any) -> str:
    os.environ.setdefault("LOG_FORMAT", "console")
    for marker, render in GENERATED.items():
        if marker in markdown:
            markdown = markdown.replace(marker, render())
    return markdown
