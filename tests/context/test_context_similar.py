"""Code like the cursor's from other files of a real git repository (`context.similar`), and
how the repository part of the prompt carries it."""

from __future__ import annotations

from pathlib import Path

from _support import indexed_repo, write

from context.prompt import ContextPiece
from context.repo import SIMILAR_TOKENS, RepoContext
from context.similar import SimilarCode, snippet_pieces

ROUTING = (
    "from app.hosts import parse_host_header\n"
    "\n\n"
    "def matches(scope):\n"
    "    headers = Headers(scope=scope)\n"
    '    parsed_host = parse_host_header(headers.get("host"))\n'
    "    return parsed_host in ALLOWED\n"
)
# Being typed: the same two lines above the cursor, and the start of the line.
MIDDLEWARE = (
    "from app.hosts import parse_host_header\n"
    "\n\n"
    "async def trusted(scope, receive, send):\n"
    "    headers = Headers(scope=scope)\n"
    "    parsed_host = "
)


def test_the_line_another_file_wrote_after_the_same_lines_is_found(tmp_path: Path) -> None:
    index = indexed_repo(
        tmp_path,
        {
            "app/routing.py": ROUTING,
            "app/other.py": "def unrelated(value):\n    return value * 2\n",
            "app/middleware.py": MIDDLEWARE + "\n",
        },
    )
    similar = SimilarCode(index.text)
    found = similar.find("app/middleware.py", MIDDLEWARE, len(MIDDLEWARE), index.paths())
    assert [snippet.path for snippet in found] == ["app/routing.py"]
    assert 'parsed_host = parse_host_header(headers.get("host"))' in found[0].text
    # The cursor's own file is never a source, even where it holds the same lines.
    alone = similar.find("app/routing.py", MIDDLEWARE, len(MIDDLEWARE), ["app/routing.py"])
    assert alone == []


def test_snippets_fit_their_budget_exactly(tmp_path: Path) -> None:
    index = indexed_repo(tmp_path, {"app/routing.py": ROUTING, "app/middleware.py": MIDDLEWARE})
    found = SimilarCode(index.text).find(
        "app/middleware.py", MIDDLEWARE, len(MIDDLEWARE), index.paths()
    )
    cost = len(f"app/routing.py\n{found[0].text}\n") + 1
    assert snippet_pieces(found, len, cost) == (snippet_pieces(found, len, cost)[0], 0)
    assert snippet_pieces(found, len, cost - 1) == ([], cost - 1)


def test_secret_and_ignored_files_are_never_a_source(tmp_path: Path) -> None:
    canary = "CANARY-7e1d"
    secret = f"    headers = Headers(scope=scope)\n    parsed_host = '{canary}'\n"
    index = indexed_repo(
        tmp_path,
        {".gitignore": "app/local.py\n", "app/middleware.py": MIDDLEWARE},
    )
    write(tmp_path, "app/local.py", secret)
    write(tmp_path, ".env", secret)
    index.refresh()
    similar = SimilarCode(index.text)
    paths = [*index.paths(), "app/local.py", ".env"]  # even when asked for them
    found = similar.find("app/middleware.py", MIDDLEWARE, len(MIDDLEWARE), paths)
    assert all(canary not in snippet.text for snippet in found)


def test_the_repository_part_carries_it_next_to_the_current_file(tmp_path: Path) -> None:
    index = indexed_repo(
        tmp_path,
        {
            "app/hosts.py": "def parse_host_header(value):\n    return value.split(':')[0]\n",
            "app/routing.py": ROUTING,
            "app/views.py": "def home(request):\n    response = Response(request)\n",
            "app/middleware.py": MIDDLEWARE + "\n",
        },
    )
    context = RepoContext(index)
    context.build()
    middleware = "app/middleware.py"

    def count(text: str) -> int:  # about a token per 4 characters
        return -(-len(text) // 4)

    def part(text: str) -> list[ContextPiece]:
        return context.context_for(middleware, count, 256, text=text, offset=len(text))

    pieces = part(MIDDLEWARE)
    assert pieces[-1].path == "app/routing.py" and "parse_host_header(headers" in pieces[-1].content
    assert sum(count(piece.text()) + 1 for piece in pieces) <= 256
    assert count(pieces[-1].text()) + 1 <= SIMILAR_TOKENS
    # Typing on in the same function keeps the part byte-identical (the KV cache keeps it)...
    assert part(MIDDLEWARE + "parse_host_header(") == pieces
    # ... and a line found elsewhere later in it is appended after what was shown.
    later = MIDDLEWARE + "parse_host_header(headers)\n    response = "
    grown = part(later)
    assert grown[: len(pieces)] == pieces and grown[-1].path == "app/views.py"
    assert sum(count(piece.text()) + 1 for piece in grown) <= 256
    # Off: no snippet.
    context.similar_tokens = 0
    assert all("headers = Headers" not in piece.content for piece in part(MIDDLEWARE))


def test_a_line_starting_with_a_bare_keyword_is_not_looked_up(tmp_path: Path) -> None:
    index = indexed_repo(tmp_path, {"app/routing.py": ROUTING, "app/middleware.py": MIDDLEWARE})
    similar = SimilarCode(index.text)
    typing = MIDDLEWARE.rsplit("\n", 1)[0] + "\n    return "  # routing.py has a `return ` line
    assert similar.find("app/middleware.py", typing, len(typing), index.paths()) == []
    named = typing + "parsed"
    assert similar.find("app/middleware.py", named, len(named), index.paths()) != []
