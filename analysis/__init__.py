"""ner-quality analysis core: spans, schemes, formats, error types, metrics, DEP, alerts.

Pure library code: no network (except the one Label Studio adapter module), no Flask.
"""

from .spans import Span, SpanTable, TokenizedText, TokenSpan, from_tokens, tokenize

__all__ = ["Span", "SpanTable", "TokenSpan", "TokenizedText", "from_tokens", "tokenize"]
__version__ = "0.1.0"
