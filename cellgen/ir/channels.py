"""Channel inference: how many channels every value and weight has.

Channels are unknowns joined by constraints, solved by union-find:

    same(a, b)             elementwise ops, a state and its next value, a conv and its weight
    known(a, 8)            declarations: `state h[hidden]`, `input x[3]`, elementwise shapes
    total(r, [a, b])       concatenation: r = a + b (solved once all but one term is known)

A conv's output channels are thus inferred from where its result goes. Every known value
remembers where it came from, so a conflict points at both places.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Optional

from cellgen.errors import ChannelMismatchError, Note, ShapeError, Span


@dataclass
class _Origin:
    value: int
    span: Optional[Span]
    why: str


class ChannelSolver:
    def __init__(self) -> None:
        self._parent: dict[Hashable, Hashable] = {}
        self._known: dict[Hashable, _Origin] = {}
        self._totals: list[tuple[Hashable, list[Hashable], Optional[Span], str]] = []
        self._splits: list[tuple[Hashable, list[Hashable], Optional[Span], str]] = []

    def _root(self, var: Hashable) -> Hashable:
        self._parent.setdefault(var, var)
        while self._parent[var] != var:
            self._parent[var] = self._parent[self._parent[var]]
            var = self._parent[var]
        return var

    def known(self, var: Hashable, value: int, span: Optional[Span], why: str,
              sides: Optional[tuple[str, str]] = None) -> None:
        """`var` has `value` channels; `sides` names, for a conflict, what already had a width and
        what says `value`."""
        root = self._root(var)
        origin = _Origin(value, span, why)
        if root in self._known:
            self._check(self._known[root], origin, span, why, sides)
        else:
            self._known[root] = origin

    def same(self, a: Hashable, b: Hashable, span: Optional[Span], why: str,
             sides: Optional[tuple[str, str]] = None) -> None:
        """`a` and `b` have equal channels. `sides` names them as the user wrote them
        (`c`, `g`), so that a conflict says which one has how many."""
        ra, rb = self._root(a), self._root(b)
        if ra == rb:
            return
        if ra in self._known and rb in self._known:
            self._check(self._known[ra], self._known[rb], span, why, sides)
        self._parent[rb] = ra
        if ra not in self._known and rb in self._known:
            self._known[ra] = self._known[rb]
        self._known.pop(rb, None)

    def total(self, result: Hashable, parts: list[Hashable], span: Optional[Span], why: str) -> None:
        self._totals.append((result, parts, span, why))

    def split(self, result: Hashable, parts: list[Hashable], span: Optional[Span], why: str) -> None:
        """`result` is cut into `parts` (`i, f, g, o = W ⋆ x`): a total whose parts, where
        nothing else says how wide they are, are as wide as each other."""
        self.total(result, parts, span, why)
        self._splits.append((result, parts, span, why))

    def value(self, var: Hashable) -> Optional[int]:
        origin = self._known.get(self._root(var))
        return origin.value if origin else None

    def solve(self) -> None:
        """Propagate concatenations until nothing more can be inferred; then let the parts of
        a split that nothing pins down be as wide as their siblings, and propagate again."""
        self._propagate()
        while self._equal_split_parts():
            self._propagate()
        self._check_splits()

    def _check_splits(self) -> None:
        """After solving: a split of known width whose other parts cannot be given a width."""
        for result, parts, span, why in self._splits:
            values = [self.value(p) for p in parts]
            total = self.value(result)
            if total is None or None not in values:
                continue
            unknown = values.count(None)
            rest = total - sum(v for v in values if v is not None)
            origin = self._known[self._root(result)]
            related = [Note(f"{total} channels: {origin.why}", origin.span)]
            if rest <= 0:
                raise ChannelMismatchError(f"{why} must have {total} channels, but its known parts already have "
                                           f"{total - rest}, which leaves none for the other {unknown}", span,
                                           related=related)
            if rest % unknown:
                raise ShapeError(f"{why} leaves {rest} channels for {unknown} parts of equal width, which does not "
                                 "divide", span, related=related,
                                 hint="make the parts' widths known where they are used" if unknown < len(parts)
                                 else f"make the total a multiple of {unknown}, or use a part where its width is "
                                      "known (with a state, an input or a weight)")

    def _equal_split_parts(self) -> bool:
        """One split's unknown parts made as wide as their siblings (or, when no part is known,
        the total cut equally: `i, _, g, _ = W ⋆ x` with W's outputs known); splits with a
        known part first, so that an equal cut never guesses what a sibling could say."""
        return self._equal_split(lambda values: None not in values or all(v is None for v in values)) \
            or self._equal_split(lambda values: any(v is not None for v in values))

    def _equal_split(self, skip) -> bool:
        for result, parts, span, why in self._splits:
            values = [self.value(p) for p in parts]
            if skip(values):
                continue
            total, known = self.value(result), [v for v in values if v is not None]
            unknown = [p for p, v in zip(parts, values) if v is None]
            if total is not None:
                rest = total - sum(known)
                if rest <= 0 or rest % len(unknown):
                    continue  # _propagate reports a total that does not add up
                width = rest // len(unknown)
            elif len(set(known)) == 1:
                width = known[0]
            else:
                continue
            for part in unknown:
                self.known(part, width, span, f"{why}: a part as wide as the others")
            return True
        return False

    def _propagate(self) -> None:
        progress = True
        while progress:
            progress = False
            for result, parts, span, why in self._totals:
                values = [self.value(p) for p in parts]
                total = self.value(result)
                if None not in values:
                    if total is None:
                        progress = True
                    elif total != sum(values):
                        origin = self._known[self._root(result)]
                        parts_notes = []
                        for part, value in zip(parts, values):
                            part_origin = self._known[self._root(part)]
                            note = Note(f"{value} channels: {part_origin.why}", part_origin.span)
                            if part_origin.span is not None and part_origin.span != span and \
                                    all(n.message != note.message for n in parts_notes):
                                parts_notes.append(note)
                        raise ChannelMismatchError(
                            f"channel mismatch: {why} has {' + '.join(map(str, values))} = {sum(values)} channels, "
                            f"but must have {total}", span,
                            related=[Note(f"{total} channels: {origin.why}", origin.span), *parts_notes])
                    self.known(result, sum(values), span, f"{why} has {' + '.join(map(str, values))} channels")
                elif total is not None and values.count(None) == 1:
                    missing = parts[values.index(None)]
                    rest = sum(v for v in values if v is not None)
                    if total - rest <= 0:
                        origin = self._known[self._root(result)]
                        raise ChannelMismatchError(f"{why} must have {total} channels, but its known parts "
                                                   f"already have {rest}", span,
                                                   related=[Note(f"{total} channels: {origin.why}", origin.span)])
                    self.known(missing, total - rest, span, f"{why} has {total} channels")
                    progress = True

    @staticmethod
    def _check(first: _Origin, second: _Origin, span: Optional[Span], why: str,
               sides: Optional[tuple[str, str]] = None) -> None:
        if first.value == second.value:
            return
        if sides:
            but = f"{sides[0]} has {first.value} channels and {sides[1]} has {second.value}"
        else:
            but = f"one side has {first.value} channels and the other {second.value}"
        raise ChannelMismatchError(
            f"channel mismatch: {why}, but {but}",
            span,
            related=[Note(f"{first.value} channels: {first.why}", first.span),
                     Note(f"{second.value} channels: {second.why}", second.span)],
        )
