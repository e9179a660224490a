"""Data flows one way (issue 14): the library layers below the engine never import it.

`mmjax.data`, `mmjax.nn`, `mmjax.objectives`, `mmjax.systems`, `mmjax.features` and `mmjax.sharding`
must not import `mmjax.train`, `mmjax.eval`, `mmjax.analyze` or `mmjax.main` — at module level or
inside a function (the ast of every file is read, so a lazy import counts too)."""

import ast
import pathlib

PKG = pathlib.Path(__file__).resolve().parents[1] / "mmjax"
LOWER = ("data", "nn", "objectives", "systems", "features", "sharding.py")
UPPER = ("mmjax.train", "mmjax.eval", "mmjax.analyze", "mmjax.main")


def _imports(path: pathlib.Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            if node.module == "mmjax":
                for alias in node.names:
                    yield node.lineno, f"mmjax.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name


def test_lower_layers_never_import_the_engine():
    files = [p for part in LOWER for p in ([PKG / part] if part.endswith(".py") else sorted((PKG / part).rglob("*.py")))]
    assert len(files) > 30
    bad = [f"{f.relative_to(PKG.parent)}:{line} imports {mod}" for f in files for line, mod in _imports(f)
           if any(mod == u or mod.startswith(u + ".") for u in UPPER)]
    assert bad == []


def test_the_check_sees_a_lazy_upward_import(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("def f():\n    from mmjax.train.data import config_targets\n    from mmjax import eval\n")
    assert [m for _, m in _imports(f)] == ["mmjax.train.data", "mmjax", "mmjax.eval"]
