"""Code fingerprints for artifact keys: a stored result is valid only for the code that made it.

Two granularities:
- `module_fingerprint("calib.decode")`: every source file of a module or package (used where calls go through
  objects, e.g. a model's methods, and cannot be followed by name);
- `object_fingerprint(cls_or_function)`: the object's own syntax tree and everything it refers to by name,
  followed through its module's top-level definitions and through imports into calib (or the object's own
  top-level package, for plugins). Another estimator in the same file, a comment or a blank line does not enter;
  a changed formula, a changed helper it calls or a changed base class does.

Library versions that change numbers (jax, transformers, ...) are part of every stage's fingerprint.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import importlib.util
import logging
import sys
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

log = logging.getLogger("calib")

LIBRARIES = ("numpy", "jax", "jaxlib", "tokenizers", "transformers", "torch", "sentence-transformers")


@functools.cache
def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries whose numerics end up in stored results."""
    out: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _sha(parts: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def module_fingerprint(name: str) -> str:
    """Hash of the source of a module, or of every .py file of a package (paths relative to the package)."""
    module = importlib.import_module(name)
    if hasattr(module, "__path__"):
        root = Path(next(iter(module.__path__)))
        files = sorted(root.rglob("*.py"))
        return _sha(f"{p.relative_to(root)}\n{_read(p)}" for p in files)
    return _sha([_read(_source_path(module))])


def _source_path(module: ModuleType) -> Path:
    path = getattr(module, "__file__", None)
    if path is None or not path.endswith(".py"):
        raise LookupError(f"{module.__name__} has no Python source file")
    return Path(path)


def _read(path: Path) -> str:
    """A source file's text, re-read whenever it changes on disk (a notebook session that edits an estimator)."""
    stat = path.stat()
    return _read_cached(str(path), stat.st_mtime_ns, stat.st_size)


@functools.cache
def _read_cached(path: str, mtime_ns: int, size: int) -> str:
    return Path(path).read_text(encoding="utf-8")


def _index(module_name: str) -> tuple[dict[str, ast.AST], dict[str, tuple[str, str | None]]]:
    """(top-level definitions by name, imports anywhere in the module by bound name -> (module, attribute))."""
    module = sys.modules.get(module_name) or importlib.import_module(module_name)
    return _index_source(module_name, module.__package__ or "", _read(_source_path(module)))


@functools.cache
def _index_source(
    module_name: str, package: str, source: str
) -> tuple[dict[str, ast.AST], dict[str, tuple[str, str | None]]]:
    tree = ast.parse(source)
    package = package or module_name.rpartition(".")[0]
    definitions: dict[str, ast.AST] = {}
    imports: dict[str, tuple[str, str | None]] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            definitions[node.name] = node
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        definitions[name.id] = node
    for node in ast.walk(tree):  # imports anywhere, also inside functions (calib imports lazily)
        imports.update(_imports(node, package))
    return definitions, imports


def _imports(node: ast.AST, package: str) -> dict[str, tuple[str, str | None]]:
    if isinstance(node, ast.Import):
        return {(a.asname or a.name).split(".")[0]: (a.name if a.asname else a.name.split(".")[0], None)
                for a in node.names}  # fmt: skip
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            base = importlib.util.resolve_name("." * node.level + base, package)
        return {(a.asname or a.name): (base, a.name) for a in node.names if a.name != "*"}
    return {}


def object_fingerprint(obj: Any) -> str:
    """Hash of obj's definition and of everything it refers to by name (see the module docstring). Objects without
    source (defined in a notebook cell or by exec) get a fingerprint that never repeats, so their results are always
    recomputed rather than wrongly reused."""
    module_name = getattr(obj, "__module__", None) or ""
    qualname = getattr(obj, "__qualname__", "") or ""
    roots = {"calib", module_name.split(".")[0]}
    pieces: dict[str, str] = {}
    try:
        _collect(module_name, qualname.split(".")[0], roots, pieces)
    except (LookupError, OSError, SyntaxError, ImportError) as err:
        log.info(
            "no source for %s.%s (%s): its results are recomputed on every run", module_name, qualname, err
        )
        return "unfingerprinted-" + hashlib.sha256(str(id(obj)).encode() + str(err).encode()).hexdigest()[:8]
    return _sha(f"{k}\n{v}" for k, v in sorted(pieces.items()))


def _collect(module_name: str, name: str, roots: set[str], pieces: dict[str, str]) -> None:
    label = f"{module_name}:{name}"
    if label in pieces or module_name.split(".")[0] not in roots:
        return
    definitions, imports = _index(module_name)
    node = definitions.get(name)
    if node is None:  # a dynamic or re-exported name: the whole module stands for it
        pieces[label] = module_fingerprint(module_name)
        return
    pieces[label] = ast.dump(node, annotate_fields=False, include_attributes=False)
    for ref in {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}:
        if ref in definitions:
            _collect(module_name, ref, roots, pieces)
        elif ref in imports:
            _follow(*imports[ref], roots, pieces)


def _follow(module_name: str, attribute: str | None, roots: set[str], pieces: dict[str, str]) -> None:
    """An imported name: a module (hashed whole) or an object (followed into its defining module)."""
    if module_name.split(".")[0] not in roots:
        return
    if attribute is not None and _is_module(f"{module_name}.{attribute}"):
        module_name, attribute = f"{module_name}.{attribute}", None
    if attribute is None:
        pieces[f"module {module_name}"] = module_fingerprint(module_name)
        return
    target = getattr(importlib.import_module(module_name), attribute, None)
    home, qualname = getattr(target, "__module__", None), getattr(target, "__qualname__", None)
    if isinstance(home, str) and isinstance(qualname, str) and "<locals>" not in qualname:
        _collect(home, qualname.split(".")[0], roots, pieces)
    else:
        _collect(module_name, attribute, roots, pieces)


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # the parent is a plain module, not a package
        return False


def stage_fingerprint(*, modules: Iterable[str] = (), objects: Iterable[Any] = ()) -> str:
    """One stage's code: whole modules or packages, objects followed by name, and the library versions."""
    parts = [f"module {m} {module_fingerprint(m)}" for m in sorted(modules)]
    parts += sorted(f"object {getattr(o, '__module__', '?')}.{getattr(o, '__qualname__', o)} {object_fingerprint(o)}"
                    for o in objects)  # fmt: skip
    parts.append(repr(sorted(library_versions().items())))
    return _sha(parts)
