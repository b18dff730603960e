#!/usr/bin/env python3
"""Fails if any crate's top-level modules import each other in a cycle.

For each `<crate>/src`, a file belongs to the top-level module its path starts with
(`shard/transport.rs` to `shard`); an edge a -> b is any `crate::b` (or `crate::{b, ..}`)
in a's files. Test-only files (`tests.rs`, `tests/`) are skipped: tests may reach anywhere.
Usage: scripts/module-cycles.py [crate dir ...] (default: every workspace crate).
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
CRATES = ["types", "proto", "control", "datapath", "media", "cc", "sfu", "loadtest", "benches"]


def edges(src: pathlib.Path) -> dict[str, set[str]]:
    mods = {p.stem for p in src.glob("*.rs")} | {p.name for p in src.iterdir() if p.is_dir()}
    mods -= {"lib", "main"}
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for f in src.rglob("*.rs"):
        rel = f.relative_to(src)
        if f.name == "tests.rs" or "tests" in rel.parts[:-1]:
            continue
        top = rel.parts[0].removesuffix(".rs")
        if top not in mods:
            continue
        text = f.read_text()
        # Drop `#[cfg(test)] mod tests { ... }` blocks at the end of a file.
        text = text.split("#[cfg(test)]\nmod tests {")[0]
        # `super::` from a file n directories deep, n+1 times over, is `crate::`.
        depth = len(rel.parts) - (2 if rel.name == "mod.rs" else 1)
        to_crate = r"crate::|" + re.escape("super::" * (depth + 1))
        for m in re.finditer(rf"(?:{to_crate})(\{{[^}}]*\}}|\w+)", text):
            group = m.group(1)
            names = re.findall(r"(?:^|[{,\s])(\w+)", group.strip("{}")) if group.startswith("{") else [group]
            for n in names:
                if n in mods and n != top:
                    graph[top].add(n)
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (c := visit(n)):
            return c
    return None


def main() -> int:
    crates = sys.argv[1:] or CRATES
    bad = 0
    for c in crates:
        src = ROOT / c / "src"
        if not src.is_dir():
            continue
        if found := cycle(edges(src)):
            print(f"{c}: module import cycle: {' -> '.join(found)}")
            bad = 1
    if not bad:
        print("no module import cycles in: " + ", ".join(crates))
    return bad


if __name__ == "__main__":
    sys.exit(main())
