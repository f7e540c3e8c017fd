"""`calib cache`: what calib keeps in its user cache, and `calib cache prune` to remove what this code never reads.

    calib cache                     sizes: GGUF conversions (current or stale), compilation caches, digest index
    calib cache prune [--dry-run]   remove stale conversions, abandoned temp folders and digests of vanished files

Why: every edit to the GGUF converter's code makes a new conversion folder (its name ends in the converter's
fingerprint, calib.models.registry.conversion_code), so a developer's cache grows by ~1.6 GB per edit for the two
built-ins. Stale means made by other converter code than this checkout's. Another checkout at another commit uses
its own folders; pruning from here removes them, and that checkout converts again on its next load (about a minute).

Never pruned: the compilation caches of other hosts (on a shared home directory they belong to other machines:
`calib cache` lists them), a temp folder younger than an hour (a conversion may be writing it), and run artifact
stores (`artifacts_dir`), whose keys follow the code per stage.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

CONVERSION_NAME = re.compile(r"^[0-9a-f]{24}-([0-9a-f]{12})$")
TEMP_AGE_SECONDS = 3600  # a temp folder untouched this long belongs to a killed writer, not a running one


@dataclass(frozen=True)
class Entry:
    """One thing in the cache: what it is, its size, and whether prune removes it."""

    path: Path
    kind: str
    bytes: int
    stale: bool
    files: tuple[Path, ...] = ()  # when set, prune removes these files of path, not path itself

    def remove(self) -> None:
        for f in self.files:
            f.unlink(missing_ok=True)
        if not self.files:
            shutil.rmtree(self.path, ignore_errors=True)


def folder_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # removed while we walked
                total += (Path(root) / name).lstat().st_size
    return total


def _is_abandoned_temp(path: Path, now: float) -> bool:
    return (
        path.name.startswith(".")
        and path.name.endswith(".tmp")
        and now - path.stat().st_mtime > TEMP_AGE_SECONDS
    )


def entries(root: Path, current_conversion: str, current_host: str) -> list[Entry]:
    """Every model conversion, compilation cache and temp folder under root, with what prune would do."""
    now = time.time()
    out: list[Entry] = []
    models = root / "models"
    for path in sorted(models.iterdir()) if models.is_dir() else []:
        match = CONVERSION_NAME.match(path.name)
        if match:
            current = match.group(1) == current_conversion
            out.append(
                Entry(
                    path,
                    "conversion" if current else "conversion (other code)",
                    folder_bytes(path),
                    not current,
                )
            )
        elif _is_abandoned_temp(path, now):
            out.append(Entry(path, "abandoned temp folder", folder_bytes(path), True))
        else:
            out.append(Entry(path, "unknown (kept)", folder_bytes(path), False))
    jax_root = root / "jax"
    children = sorted(jax_root.iterdir()) if jax_root.is_dir() else []
    for path in (p for p in children if p.is_dir()):
        kind = (
            "compilation cache (this host)"
            if path.name == current_host
            else "compilation cache (other host, kept)"
        )
        out.append(Entry(path, kind, folder_bytes(path), False))
    loose = tuple(p for p in children if p.is_file())  # the layout before per-host folders: never read now
    if loose:
        size = sum(p.stat().st_size for p in loose)
        out.append(Entry(jax_root, f"{len(loose)} compiled programs without a host tag", size, True, loose))
    return out


def stale_digests(index_path: Path) -> tuple[dict, list[str]]:
    """The digest index and its keys whose file is gone or changed (a key is 'path|size|mtime_ns')."""
    try:
        index = json.loads(index_path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}, []
    stale = []
    for key in index:
        path, _, rest = key.rpartition("|")
        path, _, size = path.rpartition("|")
        try:
            st = os.stat(path)
            current = f"{st.st_size}" == size and f"{st.st_mtime_ns}" == rest
        except OSError:
            current = False
        if not current:
            stale.append(key)
    return index, stale


def human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def main(argv: list[str]) -> int:
    from calib.cache import atomic_write_text, cache_root, host_tag
    from calib.models.registry import conversion_code

    parser = argparse.ArgumentParser(prog="calib cache", description=__doc__.splitlines()[0])
    parser.add_argument("action", nargs="?", choices=("show", "prune"), default="show")
    parser.add_argument(
        "--dry-run", action="store_true", help="with prune: say what would go, remove nothing"
    )
    args = parser.parse_args(argv)
    root = cache_root()
    found = entries(root, conversion_code(), host_tag())
    index_path = root / "digests.json"
    index, old_keys = stale_digests(index_path)
    print(f"calib cache: {root}")
    for e in found:
        mark = "  [stale]" if e.stale else ""
        print(f"  {human(e.bytes):>9}  {e.kind:44s} {e.path.relative_to(root)}{mark}")
    print(f"  {human(folder_bytes(index_path)) if index_path.exists() else '0 B':>9}  {'digest index':44s} "
          f"digests.json ({len(index)} files, {len(old_keys)} gone or changed)")  # fmt: skip
    stale = [e for e in found if e.stale]
    freed = sum(e.bytes for e in stale)
    if args.action == "show":
        print(f"stale: {human(freed)} in {len(stale)} entries (`calib cache prune` removes them)")
        return 0
    verb = "would remove" if args.dry_run else "removed"
    for e in stale:
        if not args.dry_run:
            e.remove()
        print(f"{verb} {e.path}" + (f" ({len(e.files)} files)" if e.files else ""))
    if old_keys and not args.dry_run:
        gone = set(old_keys)
        atomic_write_text(index_path, json.dumps({k: v for k, v in index.items() if k not in gone}, indent=0))
    print(f"{verb} {human(freed)} in {len(stale)} entries and {len(old_keys)} digest-index lines")
    return 0
