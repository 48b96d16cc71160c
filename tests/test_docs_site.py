"""The documentation site's generated pages say what the code does (docs/hooks.py), and the
README stays a front door."""

import importlib.util
from pathlib import Path
from types import ModuleType

import yaml

from app.cli import cli
from app.config import Settings
from app.main import app

PROJECT = Path(__file__).resolve().parent.parent


def hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_hooks", PROJECT / "docs" / "hooks.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_configuration_table_has_a_row_per_setting_with_its_meaning() -> None:
    table = hooks().settings_table().splitlines()

    rows = {line.split("|")[1].strip(" `"): line for line in table[2:]}
    assert list(rows) == list(Settings.model_fields)
    for name, field in Settings.model_fields.items():
        assert field.description, f"{name} has no description"
    assert rows["INGEST_PAGE_SIZE"] == (
        "| `INGEST_PAGE_SIZE` | `100` | >= 1, <= 10000 | Records asked for per page |"
    )
    assert "| `DATABASE_URL` | unset |" in rows["DATABASE_URL"]


def test_the_cli_page_has_every_command_and_the_endpoint_table_every_path() -> None:
    module = hooks()
    commands = module.cli_reference()
    endpoints = module.openapi_table()

    for command in cli.registered_commands:
        assert command.callback is not None
        assert f"## crew-etl {command.callback.__name__}\n" in commands
    assert "--dry-run" in commands and "╭" not in commands  # plain text, no rich boxes
    for path in app.openapi()["paths"]:
        assert f"| `{path}` |" in endpoints


def test_every_page_is_in_the_nav_and_the_readme_fits_on_a_screen() -> None:
    config = yaml.safe_load((PROJECT / "mkdocs.yml").read_text())

    def pages(nav: list[object]) -> list[str]:
        found: list[str] = []
        for entry in nav:
            for value in entry.values() if isinstance(entry, dict) else [entry]:
                found += pages(value) if isinstance(value, list) else [str(value)]
        return found

    listed = set(pages(config["nav"]))
    written = {str(p.relative_to(PROJECT / "docs")) for p in (PROJECT / "docs").rglob("*.md")}
    assert written <= listed | OTHER_PAGES, written - listed
    assert len((PROJECT / "README.md").read_text().splitlines()) <= 200


# Written beside this site; the nav gets them when they land.
OTHER_PAGES = {
    "how-to/webhooks.md",
    "how-to/alerts.md",
    "how-to/kubernetes.md",
    "explanation/topology.md",
    "how-to/follow-a-run.md",
    "explanation/http-caching.md",
    "reference/openapi-clients.md",
    "explanation/extraction.md",
}
