"""The package's layering, checked on the source: who may import whom.

`model` is the contract publishing and serving share, so it imports no stage; serving
never reaches into the batch stages; publishing never into training or ingest. A DAG
file imports only its own stage's `steps` module (plus `config` and `contracts`).
Imports are read from the syntax tree, including those inside functions and under
`TYPE_CHECKING`, so a lazy import cannot slip past.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("sources", "ingest", "features", "train", "model", "publish", "serve")
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "serve": ("ingest", "train", "publish"),
    "publish": ("train", "ingest"),
    "model": STAGES,
}
# The modules a DAG file may call into, besides `jobs.config` and `jobs.contracts`.
DAG_STAGE: dict[str, tuple[str, ...]] = {
    # The ingest DAG's last task pushes its figures to the Pushgateway (monitoring's step).
    "ingest": ("jobs.ingest.steps", "jobs.monitor.steps"),
    "maintenance": ("jobs.ingest.steps", "jobs.privacy.retention"),
    "features": ("jobs.features.steps",),
    "train": ("jobs.train.steps",),
    "champion_watch": ("jobs.train.steps",),
    "publish": ("jobs.publish.steps",),
    "privacy": ("jobs.privacy.steps",),
    "monitor": ("jobs.monitor.steps",),
}


def imported_modules(path: Path) -> set[str]:
    """Every absolute module name a file imports (``from a import b`` counts as a.b too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def stage_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "jobs" and parts[1] in STAGES else None


def violations(package: Path) -> list[str]:
    """Forbidden imports in a ``jobs`` package tree, as ``file: stage -> stage (module)``."""
    out = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent)
        own = stage_of(".".join(rel.with_suffix("").parts))
        if own is None:
            continue
        for module in sorted(imported_modules(path)):
            target = stage_of(module)
            if target and target != own and target in FORBIDDEN.get(own, ()):
                out.append(f"{rel}: {own} -> {target} ({module})")
    return out


def test_the_package_respects_its_layers() -> None:
    assert violations(ROOT / "jobs") == []


def test_a_forbidden_import_is_caught(tmp_path: Path) -> None:
    """The check itself works: synthetic modules that break each rule are all reported."""
    package = tmp_path / "jobs"
    for stage in ("serve", "publish", "model"):
        (package / stage).mkdir(parents=True)
    (package / "serve" / "bad.py").write_text(
        "def answer():\n    from jobs.train.als import fit\n    return fit\n"
    )
    (package / "publish" / "bad.py").write_text("from jobs.ingest import silver\n")
    (package / "model" / "bad.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import jobs.publish.layout\n"
    )
    (package / "serve" / "fine.py").write_text("from jobs.model.ranking import top_k\n")
    found = violations(package)
    assert found == [
        "jobs/model/bad.py: model -> publish (jobs.publish.layout)",
        "jobs/publish/bad.py: publish -> ingest (jobs.ingest)",
        "jobs/publish/bad.py: publish -> ingest (jobs.ingest.silver)",
        "jobs/serve/bad.py: serve -> train (jobs.train.als)",
        "jobs/serve/bad.py: serve -> train (jobs.train.als.fit)",
    ]


@pytest.mark.parametrize("dag", sorted(DAG_STAGE))
def test_a_dag_file_imports_only_its_stage_steps(dag: str) -> None:
    allowed = {"jobs.config", "jobs.contracts", *DAG_STAGE[dag]}
    used = {
        m
        for m in imported_modules(ROOT / "dags" / f"{dag}.py")
        if m.startswith("jobs.") and not any(m.startswith(f"{a}.") for a in allowed)
    }
    assert used <= allowed, used


def test_the_bento_ships_every_module_the_service_imports() -> None:
    """What the service imports (transitively, within jobs) is in the bentofile's include."""
    import pathspec
    import yaml

    # BentoML reads include patterns the gitignore way (a "*" stops at "/"): so does this.
    include = pathspec.PathSpec.from_lines(
        "gitignore", yaml.safe_load((ROOT / "bento" / "bentofile.yaml").read_text())["include"]
    )
    todo, seen = ["bento/service.py"], set()
    while todo:
        rel = todo.pop()
        if rel in seen:
            continue
        seen.add(rel)
        for module in imported_modules(ROOT / rel):
            if not module.startswith("jobs"):
                continue
            for candidate in (
                module.replace(".", "/") + ".py",
                module.replace(".", "/") + "/__init__.py",
            ):
                if (ROOT / candidate).exists():
                    todo.append(candidate)
    for rel in sorted(seen):
        package_inits = [
            str(p / "__init__.py") for p in Path(rel).parents if str(p) not in (".", "bento")
        ]
        for needed in [rel, *package_inits]:
            assert include.match_file(needed), needed
