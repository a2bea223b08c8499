"""What the user edited lately in other files (`context.recent`), noted from the editor's
buffers of a real git repository, and how the repository part of the prompt carries it."""

from __future__ import annotations

from pathlib import Path

from _support import indexed_repo, write

from context.recent import MAX_LINES, REGIONS, RecentEdits, Region, changed_lines
from context.repo import RECENT_TOKENS, RepoContext

HELPERS = "import re\n\n\ndef slugify(text):\n    return re.sub(r'\\W+', '-', text).lower()\n"
# A helper the user writes in helpers.py, then calls from views.py.
WRITTEN = (
    "\n\n"
    "def title_of(post, *, short=False):\n"
    '    """The post\'s title, cut at 40 characters when short."""\n'
    "    return post.title[:40] if short else post.title\n"
)
VIEWS = (
    "from app.helpers import slugify\n"
    "\n\n"
    "def render(post):\n"
    "    slug = slugify(post.name)\n"
    "    heading = "
)


def count(text: str) -> int:  # about a token per 4 characters
    return -(-len(text) // 4)


def test_changed_lines_of_an_edit() -> None:
    assert changed_lines("a\nb\nc\n", "a\nb\nc\n") is None
    assert changed_lines("a\nb\nc\n", "a\nbx\nc\n") == (1, 1, 1, 1)  # one line typed in
    # Lines added: the new lines 2 and 3 stand where line 2 stood, which is now line 4.
    assert changed_lines("a\nb\nc\n", "a\nb\nnew\nmore\nc\n") == (2, 2, 4, 3)
    assert changed_lines("a\nb\nc\nd\n", "a\nd\n") == (1, 3, 1, 1)  # lines deleted
    # A repeated line added: the start and the end in common never overlap.
    assert changed_lines("a\na\n", "a\na\na\n") == (2, 2, 3, 2)
    assert changed_lines("", "x\n") == (0, 0, 1, 0)


def test_typing_makes_one_region_and_lines_added_above_move_it() -> None:
    edits = RecentEdits()
    text = "\n".join(f"line {n}" for n in range(40))
    typed = text.replace("line 20", "line 20 and more")
    edits.note("a.py", text, typed)
    edits.note("a.py", typed, typed.replace("line 21", "line 21 too"))
    assert edits.regions("b.py") == [Region("a.py", 20, 21)]
    grown = typed.replace("line 21", "line 21 too").replace("line 2\n", "line 2\nnew\nnew\n")
    edits.note("a.py", typed.replace("line 21", "line 21 too"), grown)
    assert edits.regions("b.py") == [Region("a.py", 3, 4), Region("a.py", 22, 23)]
    # The cursor's own file is never a source; the oldest regions go first.
    assert edits.regions("a.py") == []
    for number in range(REGIONS):
        edits.note(f"m{number}.py", "x\n", "y\n")
    assert [region.path for region in edits.regions("b.py")][-1] == "m0.py"


def test_a_region_shows_the_whole_function_holding_it() -> None:
    edits = RecentEdits()
    after = HELPERS + WRITTEN
    edits.note("app/helpers.py", HELPERS, after.replace("post.title\n", "post.titl\n"))
    edits.note("app/helpers.py", after.replace("post.title\n", "post.titl\n"), after)
    (snippet,) = edits.snippets("app/views.py", {"app/helpers.py": after}.get)
    assert snippet.text == WRITTEN.strip("\n")
    # A closing brace ends its block; a name that starts with `end` starts the next one.
    go = "func a() {\n\treturn 1\n}\nendpoint = 2\n"
    edits.note("a.go", go.replace("1", "0"), go)
    assert edits.snippets("app/views.py", {"a.go": go}.get)[0].text == "func a() {\n\treturn 1\n}"
    # A method edited in a class: the method, from its `def`, not the whole class.
    big = "class Big:\n" + "".join(f"    def m{n}(self):\n        pass\n" for n in range(40))
    edited = big.replace("def m10(self):\n        pass", "def m10(self):\n        return 1")
    edits.note("big.py", big, edited)
    method = edits.snippets("app/views.py", {"big.py": edited}.get)[0]
    assert method.text == "    def m10(self):\n        return 1"
    # A signature over several lines: from its `def`.
    wrapped = "def wrapped(\n    a,\n    b,\n) -> int:\n    return a\n"
    edits.note("wrapped.py", wrapped.replace("return a", "return b"), wrapped)
    assert edits.snippets("app/views.py", {"wrapped.py": wrapped}.get)[0].text == wrapped.strip()
    # A long function: `MAX_LINES` from its `def`.
    long = "def long():\n" + "".join(f"    x{n} = {n}\n" for n in range(40))
    edits.note("long.py", long, long.replace("x20 = 20", "x20 = 0"))
    cut = edits.snippets("app/views.py", {"long.py": long}.get)[0]
    assert cut.text.startswith("def long():\n    x0 = 0")
    assert len(cut.text.split("\n")) == MAX_LINES
    edits.note("long.py", long, long.replace("x39 = 39", "x39 = 0"))  # further down: up to it
    assert edits.snippets("app/views.py", {"long.py": long}.get)[0].text.endswith("x39 = 39")


def test_the_helper_just_written_comes_before_the_definitions(tmp_path: Path) -> None:
    index = indexed_repo(
        tmp_path, {"app/__init__.py": "", "app/helpers.py": HELPERS, "app/views.py": VIEWS}
    )
    context = RepoContext(index)
    context.build()

    def part(text: str) -> list[str]:
        pieces = context.context_for("app/views.py", count, 256, text=text, offset=len(text))
        assert sum(count(piece.text()) + 1 for piece in pieces) <= 256
        return [piece.content for piece in pieces]

    assert not any("title_of" in content for content in part(VIEWS))
    index.set_buffer("app/helpers.py", HELPERS)  # opened
    for end in range(len(HELPERS), len(HELPERS + WRITTEN), 7):  # typed
        index.set_buffer("app/helpers.py", (HELPERS + WRITTEN)[: end + 7])
    shown = part(VIEWS)
    recent = next(content for content in shown if "def title_of" in content)
    assert recent == WRITTEN.strip("\n")
    assert shown.index(recent) < next(
        number for number, content in enumerate(shown) if "def slugify" in content
    )
    # Typing on in views.py keeps the part byte-identical (the KV cache keeps it).
    index.set_buffer("app/views.py", VIEWS + "title_")
    assert part(VIEWS + "title_") == shown
    # Off: nothing of it.
    context.recent_tokens = 0
    assert not any("title_of" in content for content in part(VIEWS))
    assert RECENT_TOKENS < 256
    # Saved and closed: no longer a source (the definitions may still show the new helper).
    context.recent_tokens = RECENT_TOKENS
    write(tmp_path, "app/helpers.py", HELPERS + WRITTEN)
    index.refresh()
    assert part(VIEWS) == shown
    index.close_buffer("app/helpers.py")
    assert WRITTEN.strip("\n") not in part(VIEWS)


def test_edits_of_secret_and_ignored_files_are_never_noted(tmp_path: Path) -> None:
    canary = "CANARY-51ab"
    index = indexed_repo(
        tmp_path,
        {".gitignore": "app/local.py\n", "app/__init__.py": "", "app/views.py": VIEWS},
    )
    write(tmp_path, "app/local.py", "X = 1\n")
    write(tmp_path, ".env", "TOKEN=1\n")
    for path in ("app/local.py", ".env"):
        index.set_buffer(path, "X = 1\n")
        index.set_buffer(path, f"X = '{canary}'\n")
    assert index.edits.regions("app/views.py") == []
    context = RepoContext(index)
    context.build()
    pieces = context.context_for("app/views.py", count, 256, text=VIEWS, offset=len(VIEWS))
    assert all(canary not in piece.content for piece in pieces)
