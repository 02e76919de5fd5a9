"""Spec text → AST: the grammar's parser, the AST models, the pretty-printer."""
from cellgen.language.parser import parse

__all__ = ["parse"]
