"""Workspace discovery and safe reading: which files belong to a workspace, and their text.

Inside a git work tree the file list is what git would show (tracked files plus untracked files
that are not ignored); outside git it is a walk that honours `.gitignore` files. Either way the
same rules then apply: skipped directories (dependencies, build output, caches), files that look
like secrets (never opened, whatever git says), oversize and binary files. Text handed to the
model has key-shaped strings redacted (context.redaction), line by line, so line numbers stay
valid.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import posixpath
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pathspec

from context.redaction import redact_secrets

if TYPE_CHECKING:
    import git

logger = logging.getLogger(__name__)

DEFAULT_SKIPPED_DIRS: frozenset[str] = frozenset(
    {
        # version control
        ".git",
        ".hg",
        ".svn",
        ".jj",
        # dependencies and virtual environments
        "node_modules",
        "bower_components",
        ".venv",
        "venv",
        "env",
        ".env",
        "site-packages",
        "vendor",
        "third_party",
        ".yarn",
        ".pnpm-store",
        # build output
        "dist",
        "build",
        "out",
        "target",
        "_build",
        ".next",
        ".nuxt",
        ".svelte-kit",
        ".gradle",
        "*.egg-info",
        # caches and tool state
        "__pycache__",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".tox",
        ".nox",
        ".cache",
        ".parcel-cache",
        ".terraform",
        "coverage",
        "htmlcov",
        ".idea",
        ".vscode",
    }
)

# Extensions that are never source text; filtering them by name saves opening thousands of
# images and archives just to find a NUL byte.
DEFAULT_SKIPPED_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".png", ".jpg", ".jpeg", ".gif", ".bmp", ".ico", ".webp", ".tif", ".tiff", ".psd",
        ".pdf", ".zip", ".gz", ".tgz", ".bz2", ".xz", ".zst", ".7z", ".rar", ".tar", ".jar",
        ".war", ".whl", ".egg", ".so", ".dylib", ".dll", ".exe", ".bin", ".o", ".a", ".lib",
        ".obj", ".class", ".pyc", ".pyo", ".pyd", ".onnx", ".gguf", ".safetensors", ".pt",
        ".pth", ".ckpt", ".npy", ".npz", ".pkl", ".pickle", ".parquet", ".arrow", ".feather",
        ".h5", ".hdf5", ".tflite", ".woff", ".woff2", ".ttf", ".otf", ".eot", ".mp3", ".mp4",
        ".wav", ".ogg", ".flac", ".avi", ".mov", ".mkv", ".webm", ".sqlite", ".sqlite3", ".db",
        ".iso", ".dmg", ".lockb",
    }
)  # fmt: skip

# Matched case-insensitively against every path component: a directory named like a key file
# is as suspicious as the file.
SECRET_NAME_GLOBS: tuple[str, ...] = (
    ".env",
    ".env.*",
    "*.env",
    "*.pem",
    "*.key",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    "*.p12",
    "*.pfx",
    "*.ppk",
    "*.keystore",
    "*.jks",
    "*.kdbx",
    ".npmrc",
    ".pypirc",
    ".netrc",
    "_netrc",
    ".pgpass",
    ".htpasswd",
    ".git-credentials",
    "credentials*.json",
    "client_secret*.json",
    # data files named after secrets (secrets.yaml, app-secrets.json); code such as
    # secret_manager.py stays readable
    "*secret*.json",
    "*secret*.yaml",
    "*secret*.yml",
    "*secret*.toml",
    "*secret*.ini",
    "*secret*.txt",
)

# Matched against directory components only: everything below them is secret.
SECRET_DIR_GLOBS: tuple[str, ...] = ("*secret*", ".ssh", ".gnupg")

# Globs containing "/" match the whole relative path or any tail of it that starts at a
# component boundary, so ".aws/credentials" also catches "home/.aws/credentials".
SECRET_PATH_GLOBS: tuple[str, ...] = (".aws/credentials", ".docker/config.json", ".kube/config")

# (mtime in ns, size in bytes): enough to notice that a file changed without reading it.
Stamp = tuple[int, int]


@dataclass(frozen=True)
class FileRules:
    """What belongs to a workspace and what may be read from it.

    `skipped_dirs` entries are directory names (a `*` makes one a glob, e.g. `*.egg-info`);
    they are skipped at any depth, in git work trees too, so that the watcher (which drops
    their events) and the file list always agree. `extra_secret_globs` add to the built-in
    secret patterns: a glob without `/` matches any path component, one with `/` matches the
    path or a tail of it.
    """

    max_bytes: int = 1_000_000
    extra_secret_globs: tuple[str, ...] = ()
    skipped_dirs: frozenset[str] = DEFAULT_SKIPPED_DIRS
    skipped_extensions: frozenset[str] = DEFAULT_SKIPPED_EXTENSIONS
    use_git: bool = True
    # Private, derived: compiled matchers, built once per rules object.
    _compiled: _CompiledRules = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_compiled", _compile_rules(self))

    def skips_dir(self, name: str) -> bool:
        """True if a directory with this name is never entered."""
        return self._compiled.skips_dir(name)


@dataclass(frozen=True)
class _CompiledRules:
    skipped_names: frozenset[str]
    skipped_dir_re: re.Pattern[str] | None
    secret_name_re: re.Pattern[str]
    secret_dir_re: re.Pattern[str]
    secret_path_re: re.Pattern[str] | None

    def skips_dir(self, name: str) -> bool:
        if name in self.skipped_names:
            return True
        return self.skipped_dir_re is not None and self.skipped_dir_re.match(name) is not None

    def secret_dir(self, name: str) -> bool:
        lowered = name.lower()
        return (
            self.secret_name_re.match(lowered) is not None
            or self.secret_dir_re.match(lowered) is not None
        )


def _union(globs: Iterable[str]) -> re.Pattern[str] | None:
    parts = [fnmatch.translate(glob.lower()) for glob in globs]
    return re.compile("|".join(f"(?:{part})" for part in parts)) if parts else None


def _compile_rules(rules: FileRules) -> _CompiledRules:
    user_names = [g for g in rules.extra_secret_globs if "/" not in g.strip("/")]
    user_paths = [g.strip("/") for g in rules.extra_secret_globs if "/" in g.strip("/")]
    # A trailing slash in a user glob ("private/") means a directory; it still matches the
    # component by name, which covers the directory and everything below it.
    user_names = [g.rstrip("/") for g in user_names if g.rstrip("/")]
    # "glob/*" as well: a path glob naming a directory covers everything below it.
    path_globs = [*SECRET_PATH_GLOBS, *user_paths]
    path_union = _union([*path_globs, *(glob + "/*" for glob in path_globs)])
    secret_name_re = _union([*SECRET_NAME_GLOBS, *user_names])
    secret_dir_re = _union(SECRET_DIR_GLOBS)
    assert secret_name_re is not None and secret_dir_re is not None
    plain = frozenset(name for name in rules.skipped_dirs if not _is_glob(name))
    globbed = [name for name in rules.skipped_dirs if _is_glob(name)]
    skipped_re = (
        re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globbed)) if globbed else None
    )
    return _CompiledRules(
        skipped_names=plain,
        skipped_dir_re=skipped_re,
        secret_name_re=secret_name_re,
        secret_dir_re=secret_dir_re,
        secret_path_re=path_union,
    )


def _is_glob(name: str) -> bool:
    return any(char in name for char in "*?[")


def is_secret_path(rel_path: str, rules: FileRules) -> bool:
    """True if `rel_path` (relative, POSIX) names a file that must never be opened.

    Key and credential file names match on any component (`config/id_rsa`, `.env.local`);
    secret directories (`secrets/`, `.ssh/`, anything named `*secret*`) make everything below
    them secret; path patterns such as `.aws/credentials` match at any depth. Matching is
    case-insensitive so that `.ENV` on a case-insensitive file system is caught too.
    """
    compiled = rules._compiled
    parts = rel_path.lower().split("/")
    for index, part in enumerate(parts):
        if compiled.secret_name_re.match(part):
            return True
        if index < len(parts) - 1 and compiled.secret_dir_re.match(part):
            return True
    if compiled.secret_path_re is not None:
        for index in range(len(parts)):
            if compiled.secret_path_re.match("/".join(parts[index:])):
                return True
    return False


def _rules_exclude(rel_path: str, rules: FileRules) -> str | None:
    """Why the rules alone (no file system access) exclude a file path, or None."""
    if is_secret_path(rel_path, rules):
        return "secret"
    parts = rel_path.split("/")
    for part in parts[:-1]:
        if rules._compiled.skips_dir(part):
            return "skipped directory"
    if os.path.splitext(parts[-1])[1].lower() in rules.skipped_extensions:
        return "binary extension"
    return None


def normalize_rel_path(rel_path: str) -> str | None:
    """A clean relative POSIX path (`./a//b` -> `a/b`), or None if it leaves the root."""
    if not rel_path or rel_path.startswith("/"):
        return None
    clean = posixpath.normpath(rel_path)
    if clean in (".", "..") or clean.startswith("../"):
        return None
    return clean


# --- gitignore outside git ---------------------------------------------------------------------

_IgnoreChain = tuple[tuple[str, pathspec.GitIgnoreSpec], ...]


def _ignored(chain: _IgnoreChain, rel_path: str, is_dir: bool) -> bool:
    """Git's precedence: the deepest .gitignore with a matching pattern decides."""
    for base, spec in reversed(chain):
        sub = rel_path[len(base) + 1 :] if base else rel_path
        result = spec.check_file(sub + "/" if is_dir else sub)
        if result.include is not None:
            return bool(result.include)
    return False


def _join(rel_dir: str, name: str) -> str:
    return f"{rel_dir}/{name}" if rel_dir else name


class FileLister:
    """Lists, and re-checks, the files of one workspace under one set of rules.

    The incremental check (`eligible`) gives exactly the answer a full listing would give for
    the paths asked about, so a watched index never drifts from a fresh scan.
    """

    def __init__(self, root: Path, rules: FileRules) -> None:
        """Prepare to list `root`; nothing is read until `list_files` or `eligible`."""
        self.root = Path(os.path.realpath(root))
        self.rules = rules
        self._git: git.Git | None = None  # bound to the root, when inside a work tree
        self._git_checked = False
        self._specs: dict[str, pathspec.GitIgnoreSpec | None] = {}

    # -- public ------------------------------------------------------------------------------

    @property
    def uses_git(self) -> bool:
        """True if the file list comes from git (the root is inside a non-ignored work tree)."""
        return self._git_command() is not None

    def reset(self) -> None:
        """Forget cached .gitignore files and the git detection (e.g. after a .gitignore edit)."""
        self._specs.clear()
        self._git = None
        self._git_checked = False

    def list_files(self) -> list[str]:
        """All workspace files: relative POSIX paths, sorted."""
        return sorted(self.scan())

    def scan(self) -> dict[str, Stamp]:
        """All workspace files with their stamps; re-reads .gitignore files and git state."""
        self.reset()
        command = self._git_command()
        if command is not None:
            listed = self._git_ls_files(command, [])
            if listed is not None:
                return self._stamp_git_paths(listed)
        chain = self._chain_for_dir("")
        return dict(self._walk("", chain)) if chain is not None else {}

    def eligible(self, rel_paths: Iterable[str]) -> dict[str, Stamp]:
        """The workspace files among `rel_paths`, or below those that are directories.

        Gives the answer a full `scan` would give for those paths, at the cost of one git call
        (or a walk of just those paths), so incremental updates never drift from a rescan.
        """
        wanted = {p for p in (normalize_rel_path(path) for path in rel_paths) if p}
        if not wanted:
            return {}
        command = self._git_command()
        if command is not None:
            found: dict[str, Stamp] = {}
            ordered = sorted(wanted)
            # Chunks keep the command line far below the OS argument limit.
            for start in range(0, len(ordered), 256):
                listed = self._git_ls_files(command, ordered[start : start + 256])
                if listed is None:
                    break
                found.update(self._stamp_git_paths(listed))
            else:
                return found
        result: dict[str, Stamp] = {}
        for rel in wanted:
            result.update(self._eligible_walk(rel))
        return result

    # -- git ---------------------------------------------------------------------------------

    def _git_command(self) -> git.Git | None:
        if self._git_checked:
            return self._git
        self._git_checked = True
        self._git = None
        if not self.rules.use_git:
            return None
        try:
            # Imported here: GitPython raises at import time when no git executable exists,
            # and a workspace outside git must still work then.
            import git
        except ImportError as error:
            logger.info("git is unavailable (%s); walking the file system instead", error)
            return None
        try:
            repo = git.Repo(self.root, search_parent_directories=True)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            return None
        except git.GitError as error:
            logger.info("cannot open the git repository at %s: %s", self.root, error)
            return None
        try:
            if repo.bare or repo.working_tree_dir is None:
                return None
            top = Path(os.path.realpath(repo.working_tree_dir))
            if top != self.root:
                # A workspace folder that git ignores (say a site-packages directory inside a
                # project's .venv) gets nothing from ls-files: walk it instead.
                rel_root = self.root.relative_to(top).as_posix()
                try:
                    repo.git.check_ignore("-q", "--", rel_root)
                    logger.debug("%s is ignored by its git repository; walking it", self.root)
                    return None
                except git.GitCommandError:
                    pass  # exit status 1: not ignored
            self._git = git.Git(str(self.root))
        except (git.GitError, ValueError, OSError) as error:
            logger.info("git cannot list %s (%s); walking instead", self.root, error)
        finally:
            repo.close()
        return self._git

    def _git_ls_files(self, command: git.Git, pathspecs: list[str]) -> list[str] | None:
        import git

        args = ["--cached", "--others", "--exclude-standard", "-z"]
        if pathspecs:
            args += ["--", *(f":(literal){path}" for path in pathspecs)]
        try:
            raw = command.ls_files(*args, stdout_as_string=False)
        except (git.GitCommandError, OSError) as error:
            logger.warning("git ls-files failed in %s (%s); walking instead", self.root, error)
            return None
        assert isinstance(raw, bytes)
        # Names are bytes; surrogateescape keeps non-UTF-8 names round-trippable to the disk.
        # A trailing "/" marks a nested repository that git does not descend into: skipped.
        return [os.fsdecode(item) for item in raw.split(b"\0") if item and not item.endswith(b"/")]

    def _stamp_git_paths(self, listed: Iterable[str]) -> dict[str, Stamp]:
        found: dict[str, Stamp] = {}
        for rel_path in listed:
            if _rules_exclude(rel_path, self.rules) is not None:
                continue
            try:
                info = os.stat(self.root / rel_path)  # follows symlinks: the target must be a file
            except OSError:
                continue  # deleted from disk but still in git's index, or a broken link
            if stat.S_ISREG(info.st_mode) and info.st_size <= self.rules.max_bytes:
                found[rel_path] = (info.st_mtime_ns, info.st_size)
        return found

    # -- walking -----------------------------------------------------------------------------

    def _spec(self, rel_dir: str) -> pathspec.GitIgnoreSpec | None:
        if rel_dir in self._specs:
            return self._specs[rel_dir]
        spec: pathspec.GitIgnoreSpec | None = None
        path = self.root / rel_dir / ".gitignore"
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                spec = pathspec.GitIgnoreSpec.from_lines(handle.read(1_000_000).splitlines())
        except FileNotFoundError:
            pass
        except OSError as error:
            logger.debug("cannot read %s: %s", path, error)
        self._specs[rel_dir] = spec
        return spec

    def _extend(self, chain: _IgnoreChain, rel_dir: str) -> _IgnoreChain:
        spec = self._spec(rel_dir)
        return (*chain, (rel_dir, spec)) if spec is not None else chain

    def _dir_excluded(self, chain: _IgnoreChain, rel_dir: str, name: str) -> bool:
        rules = self.rules
        return (
            rules._compiled.skips_dir(name)
            or rules._compiled.secret_dir(name)
            or _ignored(chain, rel_dir, True)
        )

    def _chain_for_dir(self, rel_dir: str) -> _IgnoreChain | None:
        """The .gitignore chain in force inside `rel_dir`, or None if the walk never gets there."""
        chain = self._extend((), "")
        if not rel_dir:
            return chain
        current = ""
        for name in rel_dir.split("/"):
            current = _join(current, name)
            if os.path.islink(self.root / current) or self._dir_excluded(chain, current, name):
                return None
            chain = self._extend(chain, current)
        return chain

    def _walk(self, rel_dir: str, chain: _IgnoreChain) -> Iterator[tuple[str, Stamp]]:
        """Files below `rel_dir`; symlinked directories are never entered (no loops)."""
        stack: list[tuple[str, _IgnoreChain]] = [(rel_dir, chain)]
        max_bytes = self.rules.max_bytes
        extensions = self.rules.skipped_extensions
        while stack:
            current, current_chain = stack.pop()
            try:
                entries = list(os.scandir(self.root / current if current else self.root))
            except OSError as error:
                logger.debug("cannot list %s: %s", current or ".", error)
                continue
            for entry in entries:
                rel = _join(current, entry.name)
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if not self._dir_excluded(current_chain, rel, entry.name):
                            stack.append((rel, self._extend(current_chain, rel)))
                        continue
                    if not entry.is_file():  # follows links: broken or looping links fail here
                        continue
                    if os.path.splitext(entry.name)[1].lower() in extensions:
                        continue
                    if is_secret_path(rel, self.rules) or _ignored(current_chain, rel, False):
                        continue
                    info = entry.stat()
                except OSError:
                    continue
                if info.st_size <= max_bytes:
                    yield rel, (info.st_mtime_ns, info.st_size)

    def _eligible_walk(self, rel: str) -> Iterator[tuple[str, Stamp]]:
        parent, _, name = rel.rpartition("/")
        chain = self._chain_for_dir(parent)
        if chain is None:
            return
        path = self.root / rel
        try:
            if path.is_symlink() and path.is_dir():
                return  # a symlinked directory is never entered
            if path.is_dir():
                if not self._dir_excluded(chain, rel, name):
                    yield from self._walk(rel, self._extend(chain, rel))
                return
            if not path.is_file() or _rules_exclude(rel, self.rules) is not None:
                return
            if _ignored(chain, rel, False):
                return
            info = path.stat()
        except OSError:
            return
        if info.st_size <= self.rules.max_bytes:
            yield rel, (info.st_mtime_ns, info.st_size)


def list_workspace_files(root: Path, rules: FileRules) -> list[str]:
    """The files of the workspace at `root`: relative POSIX paths, sorted.

    In a git work tree: tracked plus untracked-not-ignored files that exist on disk. Outside
    git: a walk honouring .gitignore files that never follows symlinked directories. Both skip
    `rules.skipped_dirs`, secret paths, binary extensions and files over `rules.max_bytes`.
    """
    return FileLister(root, rules).list_files()


# --- reading ----------------------------------------------------------------------------------


class FileRefused(OSError):
    """A file that is not read as text; `str(error)` is `"<path>: <reason>"`, one line."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        """Refuse `path` because of `reason` (e.g. "a FIFO, not a regular file")."""
        super().__init__(f"{os.fspath(path)}: {reason}")
        self.path = os.fspath(path)
        self.reason = reason


_FILE_KINDS: tuple[tuple[Callable[[int], bool], str], ...] = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _check_regular(path: str, info: os.stat_result, max_bytes: int) -> None:
    """Raise FileRefused unless `info` is a regular file of at most `max_bytes` bytes."""
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _FILE_KINDS if test(info.st_mode)), "special")
        raise FileRefused(path, f"{kind}, not a regular file")
    if info.st_size > max_bytes:
        raise FileRefused(path, f"{info.st_size} bytes is over the {max_bytes} byte limit")


def _refusal(path: str, error: OSError) -> FileRefused:
    """The FileRefused for an OSError raised while stat'ing, opening or reading `path`."""
    if isinstance(error, FileNotFoundError):
        return FileRefused(path, "missing")
    return FileRefused(path, error.strerror or str(error))


def _read_regular(path: str, max_bytes: int) -> bytes:
    """The bytes of the regular file at `path`, never blocking; raises FileRefused.

    The path is stat'ed before it is opened, so a FIFO or a device is refused without being
    opened (opening a FIFO for reading waits for a writer); the open is non-blocking and the
    open file is checked again, which closes the race with a file swapped in between.
    """
    try:
        info = os.stat(path)
    except OSError as error:
        raise _refusal(path, error) from error
    _check_regular(path, info, max_bytes)
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        raise _refusal(path, error) from error
    with os.fdopen(descriptor, "rb") as handle:
        _check_regular(path, os.fstat(handle.fileno()), max_bytes)
        try:
            data = handle.read(max_bytes + 1)
        except OSError as error:
            raise _refusal(path, error) from error
    if len(data) > max_bytes:
        raise FileRefused(path, f"grew past the {max_bytes} byte limit while being read")
    return data


def _decode_source(path: str, data: bytes) -> str:
    """`data` as UTF-8 text; raises FileRefused for binary (a NUL byte) or non-UTF-8 data."""
    if b"\0" in data:
        raise FileRefused(path, "binary (it contains NUL bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise FileRefused(path, f"not UTF-8 ({error.reason} at byte {error.start})") from error


def read_text_file(path: Path, max_bytes: int) -> str:
    """The text of a file the user named directly (not redacted: callers redact).

    Raises FileRefused, with a one-line reason, for a missing file, a directory, anything else
    that is not a regular file (a FIFO, socket or device: refused without blocking), a file
    over `max_bytes`, binary data (a NUL byte) and text that is not UTF-8. Symlinks are
    followed; line endings are kept as they are on disk. Secret paths are the caller's check.
    """
    name = os.fspath(path)
    return _decode_source(name, _read_regular(name, max_bytes))


def path_refusal(root: Path, rel_path: str, rules: FileRules) -> str | None:
    """Why the file `rel_path` under `root` must not reach a model, judged by its path and what
    it is on disk (not by .gitignore), or None.

    Refused: secret names, paths leaving the root, symlinks (anywhere in the path) that resolve
    outside the root or to a secret path, and anything on disk that is not a regular file
    (FIFOs, sockets, devices, directories), checked with `stat` so nothing is ever opened.
    A path that does not exist is judged by its name alone (an unsaved buffer).
    """
    clean = normalize_rel_path(rel_path)
    if clean is None:
        return "outside the workspace"
    if is_secret_path(clean, rules):
        return "a secret file"
    real = _resolved(root, clean)
    if real is None:
        return "it links outside the workspace"
    real_root = os.path.realpath(root)
    real_rel = os.path.relpath(real, real_root).replace(os.sep, "/")
    if real_rel != clean and is_secret_path(real_rel, rules):
        return f"it links to the secret path {real_rel}"
    try:
        info = os.stat(real)
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    return None


def _resolved(root: Path, clean: str) -> str | None:
    """The real path of `root/clean` (symlinks followed), or None if it leaves the root."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(real_root, clean))
    return real if real.startswith(real_root + os.sep) else None


def read_source(root: Path, rel_path: str, rules: FileRules) -> str | None:
    """The redacted text of a workspace file, or None if it must not or cannot be used.

    None (logged at debug level) for whatever `path_refusal` refuses (checked before anything
    is opened, symlink targets included) and whatever `read_text_file` refuses: missing files,
    files over `rules.max_bytes`, binary files and files that are not UTF-8. Line endings are
    kept as they are on disk.
    """
    why = path_refusal(root, rel_path, rules)
    clean = normalize_rel_path(rel_path)
    real = _resolved(root, clean) if clean is not None else None
    if why is not None or real is None:
        logger.debug("not reading %s: %s", rel_path, why or "outside the workspace")
        return None
    try:
        text = read_text_file(Path(real), rules.max_bytes)
    except FileRefused as refused:
        logger.debug("not reading %s: %s", clean, refused.reason)
        return None
    return redact_secrets(text)
