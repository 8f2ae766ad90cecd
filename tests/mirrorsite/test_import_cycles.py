"""No import cycle between any two modules of the five apps.

import-linter's contracts (pyproject.toml) check the direction between packages and floors;
this checks every module against every other, imports inside functions included (grimp reads
them as any other). Imports made only for annotations (`if TYPE_CHECKING:`) never run and are
left out, as the contracts leave them out.
"""

from __future__ import annotations

import grimp

APPS = ("mirrorsite", "registry", "dashboard", "access", "audit")


def strongly_connected(graph: grimp.ImportGraph) -> list[list[str]]:
    """The groups of modules that import each other, directly or not (Tarjan, without recursion)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            module, imported = work[-1]
            following = next(imported, None)
            if following is not None:
                if following not in index:
                    index[following] = low[following] = len(index)
                    stack.append(following)
                    on_stack.add(following)
                    work.append((following, iter(sorted(graph.find_modules_directly_imported_by(following)))))
                elif following in on_stack:
                    low[module] = min(low[module], index[following])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[module])
            if low[module] == index[module]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == module:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return groups


def describe(graph: grimp.ImportGraph, group: list[str]) -> str:
    """One cycle through the group, with the lines that make it."""
    first = group[0]
    for imported in sorted(graph.find_modules_directly_imported_by(first)):
        if imported in group:
            back = graph.find_shortest_chain(importer=imported, imported=first) or ()
            chain = (first, *back)
            steps = []
            for importer, target in zip(chain, chain[1:], strict=False):
                lines = [d["line_number"] for d in graph.get_import_details(importer=importer, imported=target)]
                steps.append(f"{importer} -> {target} (line {', '.join(map(str, lines))})")
            return "; ".join(steps)
    return ", ".join(group)


def test_the_graph_finds_a_cycle_when_there_is_one():
    graph = grimp.ImportGraph()
    for module in ("a", "b", "c", "d"):
        graph.add_module(module)
    graph.add_import(importer="a", imported="b")
    graph.add_import(importer="b", imported="c")
    graph.add_import(importer="c", imported="a")
    graph.add_import(importer="c", imported="d")
    assert strongly_connected(graph) == [["a", "b", "c"]]


def test_no_module_of_the_apps_imports_itself_through_others():
    graph = grimp.build_graph(*APPS, exclude_type_checking_imports=True, cache_dir=None)
    cycles = [describe(graph, group) for group in strongly_connected(graph)]
    assert cycles == [], "import cycles:\n" + "\n".join(cycles)
