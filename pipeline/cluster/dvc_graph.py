"""What DVC knows about the project: its stages in run order, which of them are stale, and what each reads."""

from __future__ import annotations

import fnmatch
from pathlib import Path

import networkx as nx
from dvc.dvcfile import Lockfile
from dvc.repo import Repo

from pipeline.errors import ConfigError


def _graph(repo: Repo) -> nx.DiGraph:
    """Stages with an edge from each stage to the stages whose outputs it reads."""
    return repo.index.graph


def stage_names(root: Path, targets: list[str]) -> list[str]:
    """Every stage `dvc repro targets` would consider (all of them for no targets), upstream first."""
    with Repo(str(root)) as repo:
        graph = _graph(repo)
        stages = list(graph.nodes)
        if targets:
            chosen = [stage for stage in stages if stage.addressing in targets]
            missing = set(targets) - {stage.addressing for stage in chosen}
            if missing:
                names = ", ".join(sorted(stage.addressing for stage in stages))
                raise ConfigError(f"no stage named {', '.join(sorted(missing))} in dvc.yaml; its stages: {names}")
            keep = set(chosen).union(*(nx.descendants(graph, stage) for stage in chosen))
            stages = [stage for stage in stages if stage in keep]
        order = list(reversed(list(nx.topological_sort(graph.subgraph(stages)))))
        return [stage.addressing for stage in order]


def matching(names: list[str], patterns: list[str]) -> list[str]:
    return [name for name in names if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)]


def stale(root: Path, names: list[str]) -> list[str]:
    """The stages among `names` that `dvc status` reports changed, in the order given."""
    if not names:
        return []
    with Repo(str(root)) as repo:
        changed = repo.status(targets=names)
    return [name for name in names if name in changed]


def upstream(root: Path, names: list[str]) -> dict[str, list[str]]:
    """For each stage, the stages whose outputs it reads directly: what a worker checks out before running it."""
    with Repo(str(root)) as repo:
        graph = _graph(repo)
        by_name = {stage.addressing: stage for stage in graph.nodes}
        return {name: sorted(dep.addressing for dep in graph.successors(by_name[name])) for name in names}


def cache_dir(root: Path) -> Path:
    with Repo(str(root)) as repo:
        return Path(repo.cache.local_cache_dir)


def ancestors(root: Path, names: list[str]) -> list[str]:
    """Every stage whose outputs `names` read, directly or not, upstream first."""
    with Repo(str(root)) as repo:
        graph = _graph(repo)
        chosen = [stage for stage in graph.nodes if stage.addressing in names]
        found = set().union(*(nx.descendants(graph, stage) for stage in chosen)) - set(chosen)
        order = reversed(list(nx.topological_sort(graph.subgraph(found))))
        return [stage.addressing for stage in order]


def output_bytes(root: Path, names: list[str]) -> int:
    """Bytes on disk of the named stages' outputs in the workspace."""
    total = 0
    with Repo(str(root)) as repo:
        for stage in repo.index.stages:
            if stage.addressing not in names:
                continue
            for out in stage.outs:
                path = Path(out.fs_path)
                files = [path] if path.is_file() else path.rglob("*")
                total += sum(f.stat().st_size for f in files if f.is_file())
    return total


def default_remote(root: Path) -> str | None:
    with Repo(str(root)) as repo:
        return repo.config["core"].get("remote")


def forget_locks(root: Path, names: list[str]) -> None:
    """Drop the dvc.lock entries of `names`, whose outputs the cluster just made anew.

    While a stage's lock entry matches its deps, DVC restores the outputs that entry names and, when the
    cache lacks them (a fresh clone's cache does), runs the stage rather than look in the run-cache. Without
    the entry, `dvc repro` takes the newest run-cache entry, the cluster's run, and writes the entry again."""
    with Repo(str(root)) as repo:
        for stage in repo.index.stages:
            if stage.addressing in names:
                Lockfile(repo, str(Path(stage.dvcfile.path).with_suffix(".lock"))).remove_stage(stage)
