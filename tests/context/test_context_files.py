"""Workspace discovery, secret safety and redaction (context/files.py) on real trees.

Git repositories are real (gitpython `Repo.init` in tmp dirs); "never opened" is checked with a
Python audit hook that records every `open`, not with mocks.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import git
import pytest
from _support import commit_all, init_repo, write
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from context.files import (
    FileLister,
    FileRefused,
    FileRules,
    is_secret_path,
    list_workspace_files,
    read_source,
    read_text_file,
)
from context.index import WorkspaceIndex
from context.redaction import REDACTED, redact_around, redact_secrets

# -- helpers ---------------------------------------------------------------------------------

_recorded_opens: list[str] | None = None


def _audit(event: str, args: tuple[object, ...]) -> None:
    if event == "open" and _recorded_opens is not None and isinstance(args[0], str | bytes):
        _recorded_opens.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)


@contextmanager
def recorded_opens() -> Iterator[list[str]]:
    """Every path opened by Python code in this process while the block runs."""
    global _recorded_opens
    opened: list[str] = []
    _recorded_opens = opened
    try:
        yield opened
    finally:
        _recorded_opens = None


def git_view(root: Path) -> list[str]:
    """What git itself lists (tracked + untracked-not-ignored), for cross-checking the walk."""
    out = git.Git(str(root)).ls_files("--cached", "--others", "--exclude-standard", "-z")
    return sorted(p for p in out.split("\0") if p and not p.endswith("/"))


def finishes(function: Callable[[], object], timeout: float = 30.0) -> object:
    """Run `function` in a thread; fail (instead of hanging the suite) if it does not return."""
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(function()), daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "did not finish: a symlink loop is being followed?"
    return result[0]


RULES = FileRules()
CANARY = "CANARY-7f3a9b1c"

# -- listing inside git ----------------------------------------------------------------------


def test_git_lists_tracked_and_untracked_but_not_ignored_or_deleted(tmp_path: Path) -> None:
    repo = init_repo(tmp_path)
    write(tmp_path, ".gitignore", "*.log\n/generated/\n")
    write(tmp_path, "src/app.py")
    write(tmp_path, "src/util.py")
    write(tmp_path, "README.md", "# hi\n")
    write(tmp_path, "doomed.py")
    commit_all(repo)
    write(tmp_path, "src/new_untracked.py")  # untracked, not ignored: listed
    write(tmp_path, "debug.log", CANARY)  # ignored
    write(tmp_path, "generated/out.py", CANARY)  # ignored directory
    write(tmp_path, "node_modules/lib/index.js")  # skipped directory
    write(tmp_path, "logo.png", b"\x89PNG\r\n\x1a\n\0\0")  # binary extension
    write(tmp_path, ".env", f"TOKEN={CANARY}\n")  # secret
    os.remove(tmp_path / "doomed.py")  # tracked, deleted from disk

    assert FileLister(tmp_path, RULES).uses_git
    assert list_workspace_files(tmp_path, RULES) == [
        ".gitignore",
        "README.md",
        "src/app.py",
        "src/new_untracked.py",
        "src/util.py",
    ]


def test_git_tracked_secret_files_are_still_excluded(tmp_path: Path) -> None:
    repo = init_repo(tmp_path)
    write(tmp_path, "main.py")
    write(tmp_path, ".env", f"A={CANARY}\n")
    write(tmp_path, "deploy/id_rsa", CANARY)
    write(tmp_path, "config/secrets/db.txt", CANARY)
    commit_all(repo)
    assert sorted(repo.git.ls_files().splitlines()) == [
        ".env",
        "config/secrets/db.txt",
        "deploy/id_rsa",
        "main.py",
    ]
    assert list_workspace_files(tmp_path, RULES) == ["main.py"]


def test_git_subdirectory_root_lists_relative_to_it(tmp_path: Path) -> None:
    repo = init_repo(tmp_path)
    write(tmp_path, "top.py")
    write(tmp_path, "pkg/a.py")
    write(tmp_path, "pkg/sub/b.py")
    commit_all(repo)
    write(tmp_path, "pkg/c.py")
    assert list_workspace_files(tmp_path / "pkg", RULES) == ["a.py", "c.py", "sub/b.py"]


def test_root_ignored_by_enclosing_repo_is_walked(tmp_path: Path) -> None:
    repo = init_repo(tmp_path)
    write(tmp_path, ".gitignore", "thirdparty_env/\n")
    write(tmp_path, "main.py")
    commit_all(repo)
    write(tmp_path, "thirdparty_env/lib/mod.py")
    write(tmp_path, "thirdparty_env/lib/other.py")
    lister = FileLister(tmp_path / "thirdparty_env", RULES)
    assert not lister.uses_git
    assert lister.list_files() == ["lib/mod.py", "lib/other.py"]


def test_git_nested_repository_is_skipped(tmp_path: Path) -> None:
    repo = init_repo(tmp_path)
    write(tmp_path, "main.py")
    commit_all(repo)
    nested = init_repo(tmp_path / "nested")
    write(tmp_path, "nested/inner.py")
    commit_all(nested)
    assert list_workspace_files(tmp_path, RULES) == ["main.py"]


def test_git_eligible_matches_a_full_listing(tmp_path: Path) -> None:
    repo = init_repo(tmp_path)
    write(tmp_path, ".gitignore", "*.log\n")
    write(tmp_path, "a.py")
    write(tmp_path, "dir/b.py")
    commit_all(repo)
    write(tmp_path, "dir/c.py")
    write(tmp_path, "dir/d.log")
    write(tmp_path, "dir/.env")
    lister = FileLister(tmp_path, RULES)
    asked = ["a.py", "dir", "dir/d.log", "dir/.env", "missing.py", "../outside.py"]
    assert sorted(lister.eligible(asked)) == ["a.py", "dir/b.py", "dir/c.py"]


# -- listing outside git ---------------------------------------------------------------------


def _gitignore_tree(root: Path) -> None:
    write(
        root,
        ".gitignore",
        "# comment\n*.log\n!keep.log\n/gen/\ndocs/**/draft.md\ntmp/\n/rootonly.txt\n"
        "\\#literal.txt\n",
    )
    write(root, "sub/.gitignore", "local.txt\n!important.log\n")
    for rel in [
        "a.py",
        "app.log",
        "keep.log",
        "gen/x.py",
        "src/gen/y.py",
        "docs/a/b/draft.md",
        "docs/draft.md",
        "docs/final.md",
        "tmp/z.py",
        "src/tmp/w.py",
        "rootonly.txt",
        "src/rootonly.txt",
        "sub/local.txt",
        "local.txt",
        "sub/important.log",
        "sub/other.log",
        "#literal.txt",
    ]:
        write(root, rel)


GITIGNORE_EXPECTED = [
    ".gitignore",
    "a.py",
    "docs/final.md",
    "keep.log",
    "local.txt",
    "src/gen/y.py",
    "src/rootonly.txt",
    "sub/.gitignore",
    "sub/important.log",
]


def test_walk_honours_gitignore_like_git(tmp_path: Path) -> None:
    _gitignore_tree(tmp_path)
    lister = FileLister(tmp_path, RULES)
    assert not lister.uses_git
    assert lister.list_files() == GITIGNORE_EXPECTED
    # Git itself agrees on the same tree.
    init_repo(tmp_path)
    assert git_view(tmp_path) == GITIGNORE_EXPECTED


def test_walk_eligible_matches_a_full_listing(tmp_path: Path) -> None:
    _gitignore_tree(tmp_path)
    lister = FileLister(tmp_path, RULES)
    every = [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")]
    assert sorted(lister.eligible(every)) == GITIGNORE_EXPECTED
    assert sorted(lister.eligible(["docs", "sub"])) == [
        "docs/final.md",
        "sub/.gitignore",
        "sub/important.log",
    ]


def test_walk_skips_rules_dirs_secrets_binary_and_oversize(tmp_path: Path) -> None:
    rules = FileRules(max_bytes=100)
    write(tmp_path, "ok.py")
    write(tmp_path, "big.py", "x" * 101)
    write(tmp_path, "exactly.py", "x" * 100)
    write(tmp_path, "node_modules/m/index.js")
    write(tmp_path, "pkg/__pycache__/mod.cpython-311.pyc", b"\0")
    write(tmp_path, "pkg/.venv/lib/x.py")
    write(tmp_path, "coder_lsp.egg-info/PKG-INFO")
    write(tmp_path, "img/logo.PNG", b"\0")
    write(tmp_path, ".ssh/config", CANARY)
    write(tmp_path, "id_ed25519", CANARY)
    assert list_workspace_files(tmp_path, rules) == ["exactly.py", "ok.py"]


def test_walk_survives_symlink_loops_and_never_follows_directory_links(tmp_path: Path) -> None:
    write(tmp_path, "a/real.py")
    os.symlink("..", tmp_path / "a" / "up")  # a/up -> root: a loop
    os.symlink("loop_b", tmp_path / "loop_a")  # file-level loop: loop_a -> loop_b -> loop_a
    os.symlink("loop_a", tmp_path / "loop_b")
    os.symlink("/", tmp_path / "rootfs")  # far outside the workspace
    os.symlink("a/real.py", tmp_path / "alias.py")  # a file link inside the root: fine
    os.symlink("missing.py", tmp_path / "dangling.py")
    files = finishes(lambda: list_workspace_files(tmp_path, RULES))
    assert files == ["a/real.py", "alias.py"]


def test_git_survives_symlink_loops(tmp_path: Path) -> None:
    repo = init_repo(tmp_path)
    write(tmp_path, "a/real.py")
    os.symlink("..", tmp_path / "a" / "up")
    commit_all(repo)
    files = finishes(lambda: list_workspace_files(tmp_path, RULES))
    assert files == ["a/real.py"]  # a/up is tracked as a link to a directory: not a file


def test_skipped_dirs_are_configurable(tmp_path: Path) -> None:
    write(tmp_path, "build/gen.py")
    write(tmp_path, "keep/me.py")
    write(tmp_path, "custom_out/x.py")
    rules = FileRules(skipped_dirs=frozenset({"custom_*"}))
    assert list_workspace_files(tmp_path, rules) == ["build/gen.py", "keep/me.py"]


# -- secret paths ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        ".env",
        ".env.local",
        "app/.env.production",
        "docker/prod.env",
        "certs/server.pem",
        "tls/private.key",
        "id_rsa",
        "home/.ssh/id_rsa.pub",
        "deploy/id_dsa",
        "id_ecdsa",
        "keys/id_ed25519",
        "bundle.p12",
        "cert.PFX",
        ".npmrc",
        "sub/.pypirc",
        ".netrc",
        "credentials.json",
        "gcp/credentials-prod.json",
        "client_secret_123.json",
        "config/secrets/x.txt",
        "k8s/app-secrets/values.yaml",
        "my_secret_stuff/notes.md",
        ".ssh/config",
        ".aws/credentials",
        "home/user/.aws/credentials",
        "android/release.keystore",
        "android/app.jks",
        "secrets.yaml",
        ".ENV",
        "Secrets/A.txt",
        ".git-credentials",
    ],
)
def test_secret_paths(path: str) -> None:
    assert is_secret_path(path, RULES)


@pytest.mark.parametrize(
    "path",
    [
        "main.py",
        "environment.py",
        "env_setup.md",
        "src/tokenizer.py",
        "keyboard.py",
        "docs/keys.md",
        "secret_manager.py",
        "auth/login.py",
        "pem_utils.py",
        ".aws/config",
        "credentials.py",
        "monkey.py",
        "src/identity.py",
    ],
)
def test_ordinary_paths(path: str) -> None:
    assert not is_secret_path(path, RULES)


def test_extra_secret_globs() -> None:
    rules = FileRules(extra_secret_globs=("*.vault", "private/", "deploy/prod/*.yaml", "ops/keys"))
    assert is_secret_path("a/b.vault", rules)
    assert is_secret_path("private/notes.md", rules)
    assert is_secret_path("x/private/notes.md", rules)
    assert is_secret_path("deploy/prod/db.yaml", rules)
    assert is_secret_path("infra/deploy/prod/db.yaml", rules)
    assert not is_secret_path("deploy/dev/db.yaml", rules)
    assert not is_secret_path("privates.md", rules)
    assert is_secret_path("ops/keys", rules)
    assert is_secret_path("ops/keys/a/b.txt", rules)
    assert is_secret_path("infra/ops/keys/a.txt", rules)
    assert not is_secret_path("ops/keyset.txt", rules)


# -- reading ---------------------------------------------------------------------------------


def test_read_source_refuses_secrets_without_opening_them(tmp_path: Path) -> None:
    for rel in [".env", "id_rsa", "config/secrets/x.txt", ".aws/credentials"]:
        write(tmp_path, rel, f"value = {CANARY}\n")
    os.symlink(".env", tmp_path / "innocent.txt")
    with recorded_opens() as opened:
        for rel in [".env", "id_rsa", "config/secrets/x.txt", ".aws/credentials", "innocent.txt"]:
            assert read_source(tmp_path, rel, RULES) is None
    root = os.path.realpath(tmp_path)
    assert [p for p in opened if os.path.realpath(p).startswith(root)] == []


def test_read_source_never_blocks_on_a_secret_fifo(tmp_path: Path) -> None:
    # Opening a FIFO for reading blocks until a writer appears: if the secret check came
    # after open(), this would hang.
    os.mkfifo(tmp_path / ".env")
    assert finishes(lambda: read_source(tmp_path, ".env", RULES), timeout=10) is None


def test_read_source_filters(tmp_path: Path) -> None:
    rules = FileRules(max_bytes=64)
    write(tmp_path, "ok.py", "a = 1\r\nb = 2\r\n")
    write(tmp_path, "binary.dat", b"text\0more")
    write(tmp_path, "latin1.txt", "café".encode("latin-1"))
    write(tmp_path, "big.py", "x" * 65)
    (tmp_path / "dir").mkdir()
    os.symlink("/etc/hostname", tmp_path / "outside.txt")
    assert read_source(tmp_path, "ok.py", rules) == "a = 1\r\nb = 2\r\n"  # CRLF kept
    assert read_source(tmp_path, "./ok.py", rules) == "a = 1\r\nb = 2\r\n"
    for rel in ["binary.dat", "latin1.txt", "big.py", "missing.py", "dir", "outside.txt"]:
        assert read_source(tmp_path, rel, rules) is None, rel
    for rel in ["../ok.py", "/etc/hostname", "", "dir/../../x"]:
        assert read_source(tmp_path, rel, rules) is None, rel


def test_read_source_never_opens_a_fifo(tmp_path: Path) -> None:
    # An ordinary name: only the file type can protect the reader from blocking forever.
    os.mkfifo(tmp_path / "mod.py")
    with recorded_opens() as opened:
        assert finishes(lambda: read_source(tmp_path, "mod.py", RULES), timeout=10) is None
    assert [p for p in opened if p.endswith("mod.py")] == []


def refusal(path: Path, max_bytes: int = 1000) -> str:
    """The reason read_text_file gives for refusing `path` (run in a thread: a FIFO may hang)."""

    def read() -> str:
        try:
            read_text_file(path, max_bytes)
        except FileRefused as error:
            assert isinstance(error, OSError)
            assert str(error) == f"{path}: {error.reason}" and "\n" not in str(error)
            return error.reason
        raise AssertionError(f"{path} was read")

    reason = finishes(read, timeout=10)
    assert isinstance(reason, str)
    return reason


def test_read_text_file_refuses_with_a_reason(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.py")
    (tmp_path / "dir.py").mkdir()
    write(tmp_path, "blob.py", b"x = 1\n\0\n")
    write(tmp_path, "latin1.py", "café = 1\n".encode("latin-1"))
    write(tmp_path, "huge.py", "x" * 1001)
    write(tmp_path, "exactly.py", "x" * 1000)
    assert refusal(tmp_path / "pipe.py") == "a FIFO, not a regular file"
    assert refusal(Path("/dev/null")) == "a character device, not a regular file"
    assert refusal(tmp_path / "dir.py") == "a directory, not a regular file"
    assert refusal(tmp_path / "missing.py") == "missing"
    assert refusal(tmp_path / "blob.py") == "binary (it contains NUL bytes)"
    assert refusal(tmp_path / "latin1.py") == "not UTF-8 (invalid continuation byte at byte 3)"
    assert refusal(tmp_path / "huge.py") == "1001 bytes is over the 1000 byte limit"
    assert read_text_file(tmp_path / "exactly.py", 1000) == "x" * 1000


def test_read_text_file_keeps_line_endings_and_does_not_redact(tmp_path: Path) -> None:
    key = "AKIA" + "Q7W2E9R4T6Y1U3I8"
    write(tmp_path, "real.py", f'KEY = "{key}"\r\nx = 1\r\n')
    os.symlink("real.py", tmp_path / "link.py")
    assert read_text_file(tmp_path / "link.py", 1000) == f'KEY = "{key}"\r\nx = 1\r\n'


def test_read_source_redacts(tmp_path: Path) -> None:
    key = "AKIA" + "Q7W2E9R4T6Y1U3I8"
    write(tmp_path, "settings.py", f'AWS_KEY = "{key}"\nDEBUG = True\n')
    text = read_source(tmp_path, "settings.py", RULES)
    assert text == f'AWS_KEY = "{REDACTED}"\nDEBUG = True\n'


# -- redaction -------------------------------------------------------------------------------

TOKENS = {
    "aws access key": "AKIAIOSFODNN7EXAMPLE",
    "aws session key": "ASIAY34FZKBOKMUTVV7A",
    "github classic": "ghp_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A",
    "github oauth": "gho_" + "16C7e42F292c6912E7710c838347Ae178B4a",
    "github user-to-server": "ghu_" + "16C7e42F292c6912E7710c838347Ae178B4a",
    "github server": "ghs_" + "16C7e42F292c6912E7710c838347Ae178B4a",
    "github refresh": "ghr_" + "16C7e42F292c6912E7710c838347Ae178B4a",
    "github fine-grained": "github_pat_"
    + "11ABCDEFG0123456789_abcdefghijKLMNOPqrstuvWXYZ0123456789",
    "openai": "sk-" + "Tq3Ab9Zk2Lm8Xw4Pv7Nc1Rs6Yt5Hu0Jd",
    "openai project": "sk-proj-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z-_Q7",
    "slack bot": "xoxb-" + "123456789012-1234567890123-AbCdEfGhIjKl",
    "slack user": "xoxp-" + "123456789012-1234567890123-AbCdEfGhIjKl",
    "google api": "AIza" + "SyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW",
    "stripe live": "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc",
    "stripe restricted": "rk_live_" + "4eC39HqLyjWDarjtT1zdp7dc",
    "jwt": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ."
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
}


@pytest.mark.parametrize("family", sorted(TOKENS))
def test_redacts_token_families(family: str) -> None:
    token = TOKENS[family]
    for line in [f'key = "{token}"', f"KEY={token}", f"{{'k': '{token}'}}", f"// {token} here"]:
        redacted = redact_secrets(line)
        assert token not in redacted, (family, line)
        assert REDACTED in redacted


def test_redacts_aws_secret_access_key() -> None:
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    text = (
        f"[default]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\naws_secret_access_key = {secret}\n"
    )
    assert redact_secrets(text) == (
        f"[default]\naws_access_key_id = {REDACTED}\naws_secret_access_key = {REDACTED}\n"
    )


def test_pem_block_keeps_line_count() -> None:
    body = "\n".join(["MIIEowIBAAKCAQEA7" + "x" * 40] * 5)
    text = (
        "import ssl\n"
        'KEY = """-----BEGIN RSA PRIVATE KEY-----\n'
        f"{body}\n"
        '-----END RSA PRIVATE KEY-----"""\n'
        "CERT_OK = True\n"
    )
    redacted = redact_secrets(text)
    assert redacted.count("\n") == text.count("\n")
    assert "MIIE" not in redacted and "PRIVATE KEY" not in redacted
    lines = redacted.split("\n")
    assert lines[0] == "import ssl"
    assert lines[1] == f'KEY = """{REDACTED}'
    assert lines[7] == f'{REDACTED}"""'
    assert lines[8] == "CERT_OK = True"


def test_pem_variants_crlf_and_escaped_newlines() -> None:
    crlf = (
        "a\r\n-----BEGIN OPENSSH PRIVATE KEY-----\r\n"
        "b3BlbnNzaA\r\n-----END OPENSSH PRIVATE KEY-----\r\nz"
    )
    assert redact_secrets(crlf) == f"a\r\n{REDACTED}\r\n{REDACTED}\r\n{REDACTED}\r\nz"
    inline = '"private_key": "-----BEGIN PRIVATE KEY-----\\nMIIEvQ\\n-----END PRIVATE KEY-----\\n",'
    assert redact_secrets(inline) == f'"private_key": "{REDACTED}\\n",'
    unterminated = "x = 1\n-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\nMore\n"
    assert redact_secrets(unterminated) == f"x = 1\n{REDACTED}\n{REDACTED}\n{REDACTED}\n"
    public = "-----BEGIN PUBLIC KEY-----\nMFkwEwYH\n-----END PUBLIC KEY-----\n"
    assert redact_secrets(public) == public


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('password = "Xk29fLq8ZpW3mN7v"', f'password = "{REDACTED}"'),
        ("DB_PASSWORD=Xk29fLq8ZpW3mN7v", f"DB_PASSWORD={REDACTED}"),
        ('API_KEY: str = "a9F3kL0pQ7xZ2mN8bV4c"', f'API_KEY: str = "{REDACTED}"'),
        ('"api_key": "a9F3kL0pQ7xZ2mN8bV4c",', f'"api_key": "{REDACTED}",'),
        ("  auth_token: 9f8e7d6c5b4a3f2e1d0c", f"  auth_token: {REDACTED}"),
        ("client = Client(apiKey='Zq8fK2mLp0Xw9vB3')", f"client = Client(apiKey='{REDACTED}')"),
        ('secret := "Zq8fK2mLp0Xw9vB3"', f'secret := "{REDACTED}"'),
        ("private_key => 'Zq8fK2mLp0Xw9vB3Yt'", f"private_key => '{REDACTED}'"),
        ('headers = {"Authorization": "Bearer 0123456789abcdefABCDEF"}', None),
    ],
)
def test_redacts_secret_assignments_keeping_the_name(line: str, expected: str | None) -> None:
    redacted = redact_secrets(line)
    if expected is None:
        assert "0123456789abcdefABCDEF" not in redacted and REDACTED in redacted
    else:
        assert redacted == expected


@pytest.mark.parametrize(
    "line",
    [
        "token = get_token()",
        "password_field = forms.CharField()",
        "tokenizer = AutoTokenizer.from_pretrained(name)",
        'tokenizer_path = "models/qwen2.5/tokenizer-v2.json"',
        'self.image_token = "<|image_pad|>"',
        'eos_token: str = "<|endoftext|>"',
        "max_tokens = 1234567890123",
        'author_email = "jane.doe42@example.com"',
        'auth_url = "https://accounts.google.com/o/oauth2/auth"',
        'token_re = r"(?u)\\b\\w\\w+\\b"',
        'PASSWORD = "${DB_PASSWORD}"',
        "const apiKey = process.env.API_KEY;",
        'password_prompt = "Please enter your password"',
        'csrf_token_name = "csrfmiddlewaretoken"',
        '"TokenClassification": "transformers.pipelines.token_classification",',
        "secret_key = settings.SECRET_KEY",
        "auth_backend = django.contrib.auth.backends.ModelBackend",
        "token_type = 'bearer'",
        "def check_password(self, raw_password: str) -> bool:",
        "if token is None or len(token) < 12:",
        "task-runner-configuration-sk-learn-pipeline = 1",
        "# see sk-learn docs for the API key handling",
    ],
)
def test_ordinary_code_is_untouched(line: str) -> None:
    assert redact_secrets(line) == line


@pytest.mark.parametrize(
    "line",
    [
        "api_key=sk_abc123XYZdef456ghi",
        "API_KEY = sk_abc123XYZdef456ghi",
        "api_key = sk_abc123XYZdef456ghi  # staging",
        "export API_KEY=sk_abc123XYZdef456ghi",
        "  api_key: key_9fK2mLp0Xw7vB3Yt_prod",
        "api_key=Zq8fK2mLp0Xw9vB3Yt4n",
        "auth_token = Zq8fK2mLp0Xw9vB3Yt4n\r",
    ],
)
def test_redacts_unquoted_keys(line: str) -> None:
    name, _, value = line.partition("=") if "=" in line else line.partition(":")
    redacted = redact_secrets(line)
    assert redacted.startswith(name) and REDACTED in redacted
    assert value.split()[0] not in redacted


@pytest.mark.parametrize(
    "line",
    [
        "api_key = get_key()",
        'api_key = os.environ["X"]',
        "api_key = settings.API_KEY",
        "token = self.next_token",
        "password = None",
        "token = default_token2",
        "token_file = tokenizer_config2024v1",
        "API_KEY = DEFAULT_API_KEY_2024",
        "password = hunter2_hunter2_hunter2",
    ],
)
def test_unquoted_names_in_code_are_untouched(line: str) -> None:
    assert redact_secrets(line) == line


PEM_IN_CODE = (
    "import ssl\n"
    'KEY = """-----BEGIN RSA PRIVATE KEY-----\n'
    "MIIEowIBAAKCAQEA7abcDEF0123\n"
    "MIIEowIBAAKCAQEA7ghiJKL4567\n"
    '-----END RSA PRIVATE KEY-----"""\n'
    'password = "Xk29fLq8ZpW3mN7v"\n'
    "ok = 1\n"
)


def test_redact_around_a_cursor_inside_a_pem_block() -> None:
    offset = PEM_IN_CODE.index("abcDEF")
    before, after = redact_around(PEM_IN_CODE, offset)
    assert "MIIE" not in before + after and "ghiJKL" not in after
    assert before.endswith(f'KEY = """{REDACTED}\n{REDACTED}')
    assert after.startswith(f'\n{REDACTED}\n{REDACTED}"""\npassword')


def test_redact_around_a_cursor_inside_a_quoted_secret() -> None:
    offset = PEM_IN_CODE.index("fLq8")
    before, after = redact_around(PEM_IN_CODE, offset)
    assert before.endswith(f'password = "{REDACTED}') and after == '"\nok = 1\n'


def test_redact_around_agrees_with_redact_secrets_at_every_offset() -> None:
    text = PEM_IN_CODE + f"token: {TOKENS['github classic']} # end\n"
    redacted = redact_secrets(text)
    for offset in range(len(text) + 1):
        before, after = redact_around(text, offset)
        assert before + after == redacted
        assert before.count("\n") == text[:offset].count("\n")  # the cursor keeps its line
        for secret in ("MIIE", "Xk29", "7v", "aB3dE5", "z5A", "PRIVATE"):
            assert secret not in before and secret not in after


def test_redaction_keeps_lines_and_is_idempotent() -> None:
    text = "\n".join(
        [
            "import os",
            f'TOKEN = "{TOKENS["github classic"]}"',
            f"jwt = {TOKENS['jwt']}",
            'password = "Xk29fLq8ZpW3mN7v"',
            "-----BEGIN PRIVATE KEY-----",
            "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
            "-----END PRIVATE KEY-----",
            "print(os.getcwd())",
        ]
    )
    once = redact_secrets(text)
    assert once.count("\n") == text.count("\n")
    assert redact_secrets(once) == once
    assert once.splitlines()[0] == "import os"
    assert once.splitlines()[-1] == "print(os.getcwd())"


def test_redaction_handles_text_that_grows_when_lowercased() -> None:
    # U+0130 lower-cases to two code points; offsets into the lowered text would drift.
    text = 'İİİ = 1\npassword = "Xk29fLq8ZpW3mN7v"\n'
    assert redact_secrets(text) == f'İİİ = 1\npassword = "{REDACTED}"\n'


# -- property: the canary never reaches the index --------------------------------------------

SECRET_NAMES = [
    ".env",
    ".env.local",
    "prod.env",
    "id_rsa",
    "id_rsa.pub",
    "id_dsa",
    "id_ecdsa",
    "id_ed25519",
    "server.pem",
    "tls.key",
    "bundle.p12",
    "store.pfx",
    ".npmrc",
    ".pypirc",
    ".netrc",
    "credentials.json",
    "credentials-prod.json",
    "app.keystore",
    "release.jks",
    "secrets/db.txt",
    "app_secrets/conf.py",
    ".ssh/config",
    ".aws/credentials",
]

# Lines shaped like real keys: the canary sits inside the key, so only redaction can hide it.
# `digits` is six distinct digits, so the entropy-based rule sees a genuinely random-looking value.
SECRET_LINES = [
    'AWS_ACCESS_KEY_ID = "AKIACANARY{digits}QZXY"',
    'token = "ghp_CANARY{digits}aBcDeFgHiJkLmNoPqRsTuV"',
    'OPENAI_API_KEY = "sk-proj-CANARY{digits}xYz_AbC-dEf"',
    'password = "CANARY{digits}!xQpLmZ"',
    "auth_token: CANARY{digits}zZyYxX",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIE CANARY{digits}\n-----END RSA PRIVATE KEY-----",
    'jwt = "eyJhbGciOiJIUzI1NiJ9.eyJDANARY{digits}.CANARY{digits}"',
    'SLACK = "xoxb-CANARY{digits}-abc"',
]

segment = st.text(alphabet="abcdxyz_", min_size=1, max_size=5)
directory = st.lists(segment, min_size=0, max_size=3).map("/".join)
ordinary_name = st.builds(
    lambda stem, ext: stem + ext, segment, st.sampled_from([".py", ".js", ".txt", ".md", ""])
)


def _join(*parts: str) -> str:
    return "/".join(part for part in parts if part)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    use_git=st.booleans(),
    ordinary=st.lists(st.tuples(directory, ordinary_name), min_size=1, max_size=8),
    secrets=st.lists(st.tuples(directory, st.sampled_from(SECRET_NAMES)), min_size=1, max_size=6),
    ignored=st.lists(st.tuples(directory, segment), min_size=0, max_size=4),
    shaped=st.lists(
        st.tuples(
            st.integers(0, 7),
            st.sampled_from(SECRET_LINES),
            st.permutations("0123456789").map(lambda digits: "".join(digits[:6])),
        ),
        max_size=4,
    ),
    link_to_secret=st.booleans(),
)
def test_canary_never_reaches_the_index(
    use_git: bool,
    ordinary: list[tuple[str, str]],
    secrets: list[tuple[str, str]],
    ignored: list[tuple[str, str]],
    shaped: list[tuple[int, str, str]],
    link_to_secret: bool,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        plain: dict[str, str] = {}
        for folder, name in ordinary:
            rel = _join(folder, name)
            if any(rel.startswith(other + "/") or other.startswith(rel + "/") for other in plain):
                continue  # a file and a directory cannot share a name
            plain[rel] = f"# ordinary file {rel}\nvalue = 1\n"
        for slot, line, digits in shaped:
            if plain:
                target = sorted(plain)[slot % len(plain)]
                plain[target] += line.format(digits=digits) + "\n"
        secret_paths = {_join(folder, name) for folder, name in secrets}
        gitignore_lines = []
        ignored_paths = set()
        for folder, stem in ignored:
            rel = _join(folder, stem + ".ignored")
            ignored_paths.add(rel)
            gitignore_lines.append("/" + rel)
        gitignore_lines.append("*.log")
        ignored_paths.add("debug.log")

        def clashes(rel: str) -> bool:
            return any(
                rel == other or rel.startswith(other + "/") or other.startswith(rel + "/")
                for other in plain
            )

        for rel, text in plain.items():
            write(root, rel, text)
        for rel in sorted(secret_paths | ignored_paths):
            if not clashes(rel) and not (root / rel).is_dir():
                # A path through an existing file cannot be created: nothing to leak then.
                with contextlib.suppress(NotADirectoryError, FileExistsError):
                    write(root, rel, f"{CANARY} raw secret {rel}\n")
        write(root, ".gitignore", "\n".join(gitignore_lines) + "\n")
        written_secret = sorted(p for p in secret_paths if (root / p).is_file())
        if link_to_secret and written_secret and not clashes("alias_link.txt"):
            os.symlink(root / written_secret[0], root / "alias_link.txt")
        if use_git:
            repo = init_repo(root)
            commit_all(repo)  # secret files get tracked: git lists them, we must not read them

        index = WorkspaceIndex(root)
        with recorded_opens() as opened:
            index.refresh()
            texts = {path: index.text(path) for path in index.paths()}
        for path, content in texts.items():
            assert content is None or "CANARY" not in content, path
        for rel in plain:
            if (root / rel).is_file():
                assert rel in texts and texts[rel] is not None, rel
        leaked = [
            p
            for p in opened
            if os.path.relpath(os.path.realpath(p), os.path.realpath(root)) in secret_paths
        ]
        assert leaked == []
