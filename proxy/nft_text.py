"""Strings inside nft command text."""
from __future__ import annotations

import re

# What may stand inside a quoted nft string as is. A quote, backslash or newline from an API name
# would end the string or the command; anything else outside this set becomes "?". Brackets
# stay: an IPv6 endpoint is written [ADDR]:PORT.
_UNSAFE = re.compile(r"[^A-Za-z0-9 ._:/@,()=+';>\[\]-]")
# a comment is at most 128 bytes in the kernel
COMMENT_MAX = 120


def quote(text: str) -> str:
    """`text` as a quoted nft string (a comment, a log prefix, a counter's name)."""
    return '"' + _UNSAFE.sub("?", text.replace('"', "'"))[:COMMENT_MAX] + '"'
