"""No two of aibatch's subpackages import each other, however indirectly (the `layers`
contract of lint-imports orders the layers; this also covers the simulator and testing)."""

from __future__ import annotations

import grimp


def test_no_package_cycle() -> None:
    graph = grimp.build_graph("aibatch")

    def package(module: str) -> str:
        return ".".join(module.split(".")[:2])

    imports: dict[str, set[str]] = {}
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            if package(imported) != package(module):
                imports.setdefault(package(module), set()).add(package(imported))

    def reaches(start: str, goal: str) -> bool:
        seen: set[str] = set()
        todo = [start]
        while todo:
            for nxt in imports.get(todo.pop(), set()) - seen:
                if nxt == goal:
                    return True
                seen.add(nxt)
                todo.append(nxt)
        return False

    cycles = sorted((a, b) for a, targets in imports.items() for b in targets if reaches(b, a))
    assert cycles == []
