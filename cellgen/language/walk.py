"""Walking and rewriting the AST: one traversal for every stage that reads or rebuilds it.

A node's children are the values of its fields (`span` aside) that are nodes, or lists of
them; everything else (names, numbers, flags) is data that stays as it is. Nodes are frozen,
so a rewrite builds new ones, and shares every subtree it did not change:

    def loop_value(node):                     # `s` → 4 inside one pass of `for s …`
        if isinstance(node, ast.Ref) and node.name == "s":
            return ast.Number(value=4.0, text="4", span=node.span)
        return None                           # not mine: look inside

    body = transform(loop.body, loop_value)

A rule that changes a node and still wants its children rewritten says so explicitly, with
`transform_children(changed, rule)`.
"""
from __future__ import annotations

from typing import Callable, Iterator, Optional

from cellgen.language.syntax import Node

Rule = Callable[[Node], Optional[object]]


def children(node: Node) -> Iterator[Node]:
    """The nodes directly below `node`, in field order."""
    for name in node.content_fields():
        value = getattr(node, name)
        if isinstance(value, Node):
            yield value
        elif isinstance(value, list):
            yield from (item for item in value if isinstance(item, Node))


def walk(tree) -> Iterator[Node]:
    """Every node of `tree` (a node or a list of them), parents before their children."""
    stack = list(reversed(tree)) if isinstance(tree, list) else [tree]
    while stack:
        node = stack.pop()
        if not isinstance(node, Node):
            continue
        yield node
        stack.extend(reversed(list(children(node))))


def transform(tree, rule: Rule):
    """`tree` rebuilt top-down: where `rule(node)` returns something, that replaces the node
    (and is not looked into); where it returns None, the node's children are transformed."""
    if isinstance(tree, list):
        return [transform(item, rule) for item in tree]
    if not isinstance(tree, Node):
        return tree
    replaced = rule(tree)
    if replaced is not None:
        return replaced
    return transform_children(tree, rule)


def transform_children(node: Node, rule: Rule) -> Node:
    """`node` with `transform(child, rule)` in place of each child; `node` itself when none changed."""
    updates = {}
    for name in node.content_fields():
        value = getattr(node, name)
        if isinstance(value, (Node, list)):
            new = transform(value, rule)
            if new is not value and (not isinstance(value, list) or any(a is not b for a, b in zip(new, value))
                                     or len(new) != len(value)):
                updates[name] = new
    return node.copy_with(**updates) if updates else node
