"""docs/cli.md is the CLI reference generated from the Typer app (tools/cli_docs.py), and is up to date."""

import importlib.util
from pathlib import Path

import typer

from mmkeras.cli.app import app

ROOT = Path(__file__).resolve().parents[1]


def load_cli_docs():
    """tools/cli_docs.py as a module (tools/ is not a package on the path)."""
    spec = importlib.util.spec_from_file_location("cli_docs", ROOT / "tools" / "cli_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_cli_md_is_what_the_app_generates():
    cli_docs = load_cli_docs()
    written = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert written == cli_docs.cli_reference(app), "docs/cli.md is out of date: run python tools/cli_docs.py"


def test_the_reference_lists_every_command_and_option_with_its_help():
    reference = load_cli_docs().cli_reference(app)
    for command in app.registered_commands:
        assert f"## mmkeras {command.callback.__name__}\n" in reference
    assert "* `--epochs` INTEGER: Training epochs. (at least 1; default: 10)" in reference
    assert "* `--fusion` [cross-attention|concat|gated]: How text and image tokens are joined." in reference
    assert "* `TARGET`: A run folder or a bundle folder. (required)" in reference


def test_a_changed_option_makes_the_reference_differ():
    cli_docs = load_cli_docs()
    changed = typer.Typer()

    @changed.command()
    def greet(times: int = typer.Option(1, "--times", min=1, help="How often.")):
        """Say hello."""

    before = cli_docs.cli_reference(changed)

    @changed.command()
    def wave(quietly: bool = typer.Option(False, "--quietly", help="Without a sound.")):
        """Wave."""

    after = cli_docs.cli_reference(changed)
    assert "* `--times` INTEGER: How often. (at least 1; default: 1)" in before
    assert before != after and "* `--quietly`: Without a sound." in after
