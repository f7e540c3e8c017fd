"""Where calib keeps converted weights, compiled programs and digests; atomic writes everywhere."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from calib.errors import WriteError


def cache_root() -> Path:
    """$CALIB_CACHE_DIR, else the platform's user cache dir (e.g. ~/.cache/calib)."""
    from platformdirs import user_cache_dir

    root = Path(os.environ.get("CALIB_CACHE_DIR") or user_cache_dir("calib"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a whole file or nothing: temp name in the same folder, then rename."""
    atomic_write_bytes(path, text.encode())


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Turn an OSError while writing `path` (read-only folder, full disk or quota, a file where a folder should be)
    into the one line a user can act on: `cannot write <path>: <reason>`. Nested, the outermost path is named:
    a file inside a folder being built reports the folder the user will look for, not its temporary name."""
    try:
        yield
    except WriteError as err:
        if err.path == str(path):
            raise
        raise WriteError(path, err.reason) from err
    except OSError as err:
        raise WriteError(path, write_problem(Path(path), err)) from err


def write_problem(path: Path, err: OSError) -> str:
    """Why a write failed, in words: an existing file that stands where a folder is needed is named ("File exists"
    or "Not a directory" alone leave a user guessing which), a folder where a file should go is said."""
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                return f"{parent} is a file, not a folder"
            break
    if path.is_dir() and isinstance(err, IsADirectoryError | FileExistsError):
        return "it is a folder"
    return str(err.strerror or err) or type(err).__name__


def check_writable(folder: str | os.PathLike, hint: str) -> None:
    """Fail now, in one line, if folder could not be created or written (read-only mount, quota, a file in the
    way), rather than after the model has loaded or a stage has run. Creates nothing: a probe file is made and
    removed in the folder, or in its nearest existing ancestor when the folder does not exist yet."""
    folder = Path(folder).expanduser()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"{existing} is a file, not a folder")
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".calib-write-check.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise WriteError(folder, f"{err.strerror or err}; {hint}") from err


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename or a new entry in `path` durable (a crash after the rename must not publish empty files)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and folder under root, files first, so their contents reach the disk before a rename."""
    for folder, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(folder)


def current_umask() -> int:
    """The process's umask (reading it means setting it; it is put back at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write a whole file or nothing: temp name in the same folder, fsync, rename, fsync the folder. The file gets the
    usual permissions (0666 less the umask), not the 0600 of its private temporary name."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o666 & ~current_umask())
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            fsync_dir(path.parent)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


LOST_RACE = (errno.ENOTEMPTY, errno.EEXIST)


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Build a folder under a temp name and rename it into place only if the block succeeds.

    Its files are fsynced before the rename and the parent after it, so a machine crash leaves the folder whole or
    absent. When another process published the same folder first, theirs is kept and ours discarded (same key,
    same contents). The folder gets 0777 less the umask, like one made by mkdir."""
    final = Path(final)
    with writing(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
        tmp.chmod(0o777 & ~current_umask())  # as mkdir would: not mkdtemp's private 0700
    try:
        with writing(final):
            yield tmp
            fsync_tree(tmp)
            try:
                os.rename(tmp, final)
            except OSError as err:
                if err.errno not in LOST_RACE:
                    raise
                shutil.rmtree(tmp, ignore_errors=True)  # another writer won the race; keep theirs
            fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file, remembered per (path, size, mtime) so large weights are hashed once."""
    path = Path(path).resolve()
    stat = path.stat()
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    index_path = cache_root() / "digests.json"
    try:
        index = json.loads(index_path.read_text())
    except (OSError, json.JSONDecodeError):
        index = {}
    if key in index:
        return index[key]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    index[key] = digest.hexdigest()
    atomic_write_text(index_path, json.dumps(index, indent=0))
    return index[key]


def host_tag(cpuinfo: str | None = None) -> str:
    """What a compiled CPU program depends on beyond JAX's own cache key: the host's instruction set and jaxlib.

    JAX keys its persistent cache by the program, flags and device kind ("cpu"), not by the CPU's features, so a
    cache folder shared between machines (a home directory on a cluster, a copied image) would hand an AVX-512
    program to a CPU without it: SIGILL or a crash while loading. One folder per tag keeps them apart.
    `cpuinfo` is /proc/cpuinfo's text (read when None; empty where there is none)."""
    import jaxlib

    if cpuinfo is None:
        cpuinfo = ""
        with contextlib.suppress(OSError):
            cpuinfo = Path("/proc/cpuinfo").read_text()
    first: dict[str, str] = {}  # the first processor's model and features (x86: flags; ARM: Features)
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        first.setdefault(key.strip(), value.strip())
    cpu = [first.get(key, "") for key in ("model name", "flags", "Features", "CPU part")]
    host = "|".join((platform.system(), platform.machine(), platform.processor(), *cpu, jaxlib.__version__))
    return f"{platform.machine() or 'host'}-{hashlib.sha256(host.encode()).hexdigest()[:12]}"


def compilation_cache_dir() -> Path:
    """calib's persistent JAX compilation cache: cache_root()/jax/<host_tag()>."""
    return cache_root() / "jax" / host_tag()


def enable_compilation_cache() -> Path | None:
    """Persistent JAX compilation cache so a second process does not recompile the sampler. Called by entry points
    (the CLI, studies, benchmarks), never by library functions; off when $CALIB_NO_COMPILATION_CACHE is set.
    Returns the cache folder, or None when it was left off."""
    if os.environ.get("CALIB_NO_COMPILATION_CACHE"):
        return None
    return _set_compilation_cache(compilation_cache_dir())


def _set_compilation_cache(path: Path | None) -> Path | None:
    import jax

    jax.config.update("jax_compilation_cache_dir", None if path is None else str(path))
    if path is not None:
        # every program: the evaluate stage compiles ~100 small bootstrap programs of ~0.3 s each (30 s per run)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


def configure(*, compilation_cache: bool | str | os.PathLike | None = None) -> None:
    """Process-wide settings a script or notebook opts into; calib's library functions change none of them.

    compilation_cache: True keeps compiled JAX programs in calib's cache folder ($CALIB_CACHE_DIR or the user
    cache dir, subfolder jax/<host tag>) so the next process skips compilation (tens of seconds per run); a path
    keeps them there (not a path shared by machines with different CPUs: see `host_tag`); False turns JAX's
    persistent cache off; None (the default) leaves JAX's settings as they are. Enabling also caches every program
    however small (JAX's size and compile-time thresholds set to 0).
    """
    if compilation_cache is None:
        return
    if compilation_cache is True:
        _set_compilation_cache(compilation_cache_dir())
    elif compilation_cache is False:
        _set_compilation_cache(None)
    else:
        path = Path(compilation_cache).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        _set_compilation_cache(path)
