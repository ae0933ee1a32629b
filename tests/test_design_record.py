"""The design record: code cites docs/design.md sections that exist, and nothing outside the repository."""

import re
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
DESIGN_RECORD = REPOSITORY / "docs" / "design.md"
NOT_SCANNED = {".venv", "venv", ".git", ".pytest_cache", "build"}
# Notes kept outside the repository, which readers of the code do not have.
OUTSIDE_CITATION = re.compile(r"\bFINDINGS\b|\bARCHITECTURE\.md\b|\.\./shared\b|/work/shared\b")
DESIGN_ANCHOR = re.compile(r"design\.md#([\w-]+)")


def repository_files():
    for path in sorted(REPOSITORY.rglob("*")):
        relative = path.relative_to(REPOSITORY)
        if path.suffix in (".py", ".md") and not NOT_SCANNED & set(relative.parts) and path.is_file():
            yield relative.as_posix(), path.read_text(encoding="utf-8")


def heading_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a markdown file's headings (lowercase, punctuation dropped, spaces as hyphens)."""
    headings = re.findall(r"^#+\s+(.+?)\s*$", markdown, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_heading_anchors_follow_github():
    assert heading_anchors("# Title\n## QAT without tensorflow-model-optimization\n### int8 latency, on XNNPACK\n") == {
        "title",
        "qat-without-tensorflow-model-optimization",
        "int8-latency-on-xnnpack",
    }


def test_nothing_cites_notes_outside_the_repository():
    this_file = Path(__file__).relative_to(REPOSITORY).as_posix()
    citing = {
        relative: [line for line in text.splitlines() if OUTSIDE_CITATION.search(line)]
        for relative, text in repository_files()
        if relative != this_file
    }
    citing = {relative: lines for relative, lines in citing.items() if lines}
    assert not citing, f"cite docs/design.md instead: {citing}"


def cited_anchors(relative: str, text: str) -> list[str]:
    """The docs/design.md anchors a file cites (the record's own `](#anchor)` links included)."""
    anchors = DESIGN_ANCHOR.findall(text)
    if relative == "docs/design.md":
        anchors += re.findall(r"\]\(#([\w-]+)\)", text)
    return anchors


def test_every_cited_design_record_section_exists():
    anchors = heading_anchors(DESIGN_RECORD.read_text(encoding="utf-8"))
    cited = {(relative, anchor) for relative, text in repository_files() for anchor in cited_anchors(relative, text)}
    assert len({anchor for _, anchor in cited}) >= 5  # the code does cite the record
    missing = sorted(f"{relative}: #{anchor}" for relative, anchor in cited if anchor not in anchors)
    assert not missing, f"docs/design.md has no such heading: {missing}"
