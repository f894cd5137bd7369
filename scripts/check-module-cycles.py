#!/usr/bin/env python3
"""Fails if the modules of a Rust crate import each other in a cycle.

    python3 scripts/check-module-cycles.py crates/liveroom/src [--layers]
    python3 scripts/check-module-cycles.py --self-test

A module is one file (`foo.rs`, `foo/mod.rs`, `foo/bar.rs`). Module A depends on module B when
A's code names an item of B: `use crate::b::..`, `crate::b::..` in an expression, `super::..`,
`self::child::..`, or a bare `child::..` path. Unit-test modules (`#[cfg(test)] mod ..`) are
left out. A name that a module only re-exports
(`pub use inner::Item;`) resolves to the module that defines it, so re-exports in `lib.rs` or a
`mod.rs` add no edge of their own. `mod child;` declarations are not dependencies.

Exit status 1 lists every cycle (each strongly connected component of more than one module);
with `--layers` it also prints the modules by layer, lowest first, where each module depends
only on lower layers.
"""

import re
import sys
from pathlib import Path


def module_of(src: Path, file: Path) -> str:
    rel = file.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("lib", "main", "mod"):
        parts = parts[:-1]
    return "::".join(["crate", *parts])


def strip(code: str) -> str:
    """Removes comments, string and char literals (so docs and messages name nothing)."""
    code = re.sub(r"/\*.*?\*/", " ", code, flags=re.S)
    code = re.sub(r'r#*"(?:.|\n)*?"#*', '""', code)
    code = re.sub(r'"(?:\\.|[^"\\])*"', '""', code)
    code = re.sub(r"'(?:\\.|[^'\\])'", "' '", code)
    code = "\n".join(line.split("//", 1)[0] for line in code.splitlines())
    return drop_test_modules(code)


def drop_test_modules(code: str) -> str:
    """Removes `#[cfg(test)] mod name { ... }`: unit tests may use anything."""
    while m := re.search(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", code):
        depth, i = 1, m.end()
        while depth and i < len(code):
            depth += {"{": 1, "}": -1}.get(code[i], 0)
            i += 1
        code = code[: m.start()] + code[i:]
    return code


def use_trees(code: str):
    """Yields every path of every `use` item, with braces expanded."""
    for m in re.finditer(r"\buse\s+([^;]+);", code):
        yield from expand(re.sub(r"\s+", "", m.group(1)), m.start())


def expand(tree: str, at: int, prefix: str = ""):
    depth, start, items = 0, 0, []
    if "{" not in tree:
        yield prefix + tree, at
        return
    head, _, body = tree.partition("{")
    body = body[: body.rfind("}")]
    for i, c in enumerate(body):
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        elif c == "," and depth == 0:
            items.append(body[start:i])
            start = i + 1
    items.append(body[start:])
    for item in filter(None, items):
        yield from expand(item, at, prefix + head)


def main() -> int:
    if "--self-test" in sys.argv:
        return self_test()
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    src = Path(args[0] if args else "crates/liveroom/src")
    return check(src, "--layers" in sys.argv)


def self_test() -> int:
    """The check finds a cycle through a re-export and a `super::` path, and passes a layered
    crate whose root re-exports everything."""
    import tempfile

    cases = {
        "cycle": (1, {
            "lib.rs": "mod a; mod b; pub use a::A;",
            "a.rs": "use crate::b::B; pub struct A;",
            "b/mod.rs": "mod c; pub use c::B;",
            "b/c.rs": "pub struct B; fn f() -> crate::A { todo!() }",
        }),
        "layered": (0, {
            "lib.rs": "mod a; mod b; pub use a::A; pub use b::B;",
            "a.rs": "pub struct A; // uses crate::b::B in a comment only\n#[cfg(test)] mod tests { use crate::b::B; }",
            "b/mod.rs": "mod c; pub use c::B; fn f() -> crate::A { todo!() }",
            "b/c.rs": "use super::super::a::A; pub struct B(A);",
        }),
    }
    failed = 0
    for name, (want, files) in cases.items():
        with tempfile.TemporaryDirectory() as d:
            for rel, text in files.items():
                path = Path(d) / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
            got = check(Path(d), False, quiet=True)
        if got != want:
            print(f"self-test {name}: exit {got}, expected {want}")
            failed = 1
    print("self-test passed" if not failed else "self-test FAILED")
    return failed


def check(src: Path, layers: bool, quiet: bool = False) -> int:
    files = sorted(src.rglob("*.rs"))
    mods = {module_of(src, f): strip(f.read_text()) for f in files}
    children = {m: set() for m in mods}
    for m in mods:
        if "::" in m:
            children[m.rsplit("::", 1)[0]].add(m.rsplit("::", 1)[1])

    # Re-exports: (module, name) -> the absolute path that `pub use` gives the name.
    reexports = {m: {} for m in mods}
    for m, code in mods.items():
        for um in re.finditer(r"\bpub(?:\([^)]*\))?\s+use\s+([^;]+);", code):
            for path, _ in expand(re.sub(r"\s+", "", um.group(1)), um.start()):
                name = path.rsplit("::", 1)[-1]
                if "as" in name:
                    continue
                reexports[m][name] = absolute(m, path, children)

    def resolve(path: str, seen=()) -> str | None:
        """The module that defines the item at absolute `path` (or the module it names)."""
        parts = path.split("::")
        for n in range(len(parts), 0, -1):
            m = "::".join(parts[:n])
            if m in mods:
                rest = parts[n:]
                if rest and rest[0] in reexports.get(m, {}) and path not in seen:
                    target = reexports[m][rest[0]] + "".join("::" + r for r in rest[1:])
                    return resolve(target, (*seen, path))
                return m
        return None

    edges = {m: set() for m in mods}
    for m, code in mods.items():
        paths = [p for p, _ in use_trees(code)]
        body = re.sub(r"\buse\s+[^;]+;", " ", code)
        paths += re.findall(r"\b(?:crate|super|self)(?:::\w+)+", body)
        paths += [p for p in re.findall(r"(?<![:\w])(\w+(?:::\w+)+)", body)
                  if p.split("::")[0] in children[m]]
        for p in paths:
            target = resolve(absolute(m, p, children))
            if target and target != m:
                edges[m].add(target)

    cycles = [c for c in sccs(edges) if len(c) > 1]
    if quiet:
        return 1 if cycles else 0
    for c in cycles:
        inner = sorted(f"{a} -> {b}" for a in c for b in edges[a] if b in c)
        print(f"cycle of {len(c)} modules: {', '.join(sorted(c))}\n  " + "\n  ".join(inner))
    if layers and not cycles:
        level = {}
        def depth(m):
            if m not in level:
                level[m] = 0
                level[m] = 1 + max((depth(d) for d in edges[m]), default=-1)
            return level[m]
        for m in mods:
            depth(m)
        for n in range(max(level.values()) + 1):
            print(f"layer {n}: " + ", ".join(sorted(k for k, v in level.items() if v == n)))
    if cycles:
        return 1
    print(f"no module cycles in {src} ({len(mods)} modules)")
    return 0


def absolute(m: str, path: str, children) -> str:
    """`path` as written in module `m`, made absolute (`crate::...`); external paths as they are."""
    parts = path.split(" as ")[0].split("::")
    if parts[0] == "crate":
        return "::".join(parts)
    out = m.split("::")
    if parts[0] in ("self", "super"):
        while parts and parts[0] in ("self", "super"):
            if parts.pop(0) == "super":
                out.pop()
        return "::".join(out + parts)
    if parts[0] in children.get(m, ()):
        return "::".join(out + parts)
    return "::".join(parts)  # another crate, or a name in scope


def sccs(edges):
    """Tarjan's strongly connected components."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            out.append(comp)

    sys.setrecursionlimit(10_000)
    for v in edges:
        if v not in index:
            visit(v)
    return out


if __name__ == "__main__":
    sys.exit(main())
