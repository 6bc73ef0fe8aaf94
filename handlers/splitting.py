"""Long texts split, and labels shortened, to a messenger's limits: one splitter for every channel.

Telegram and WhatsApp count lengths in UTF-16 code units, as their clients do
(an emoji such as "📅" counts 2), so every measure here does too. Pure
functions on `str`; the channels pick the limits (Telegram 4,096 per message,
WhatsApp 4,096 per text and 1,024 for an interactive message's body).
"""

from __future__ import annotations

#: Characters a shortened label does not end on before its "…".
_TRAILING = " ,.;:-–—/(["


def utf16_length(text: str) -> int:
    """Length in UTF-16 code units (an emoji outside the BMP counts 2)."""
    return len(text.encode("utf-16-le")) // 2


def split_text(text: str, limit: int) -> list[str]:
    """`text` in chunks of at most `limit` UTF-16 units, on line boundaries where possible.

    A line longer than `limit` is cut at its last space inside the limit, or
    hard at the limit when it has none (never inside a surrogate pair: whole
    characters only). Blank chunks are dropped, so a blank text gives [].
    Joining the chunks with new lines gives the text back, less the spaces or
    new lines a cut fell on.
    """
    if utf16_length(text) <= limit:
        return [text] if text.strip() else []
    chunks: list[str] = []
    current = ""
    for line in text.splitlines(keepends=True):
        if utf16_length(current) + utf16_length(line) <= limit:
            current += line
            continue
        if current:
            chunks.append(current)
            current = ""
        while utf16_length(line) > limit:
            head = _cut(line, limit)
            chunks.append(head)
            line = line[len(head) :]
        current = line
    if current:
        chunks.append(current)
    return [chunk.rstrip("\n") for chunk in chunks if chunk.strip()]


def split_tail(text: str, limit: int, chunk_limit: int) -> tuple[list[str], str]:
    """(chunks, tail): the tail is the longest run of whole last lines within `limit`.

    For a message whose last part carries buttons under a tighter limit (a
    WhatsApp interactive body, 1,024): the tail goes with the buttons, what
    comes before it as plain messages of at most `chunk_limit`. A last line
    longer than `limit` is cut like any long line, its last piece being the tail.
    """
    text = text.rstrip()
    if utf16_length(text) <= limit:
        return [], text
    lines = text.splitlines(keepends=True)
    tail = ""
    while lines and utf16_length(lines[-1] + tail) <= limit:
        tail = lines.pop() + tail
    pieces: list[str] = []
    if not tail.strip():
        pieces = split_text(lines.pop(), limit)
        tail = pieces.pop()
    return [*split_text("".join(lines).rstrip("\n"), chunk_limit), *pieces], tail.strip("\n")


def shorten(label: str, limit: int) -> str:
    """`label` on one line within `limit` UTF-16 units; a longer one is cut after a
    whole word and ends with "…" (cut inside a word only when its first word alone
    is too long)."""
    label = " ".join(label.split())
    if utf16_length(label) <= limit:
        return label
    head = _prefix(label, limit - 1)
    space = head.rfind(" ")
    # The cut falls inside a word unless the next character is a space.
    if space > 0 and label[len(head) : len(head) + 1] != " ":
        head = head[:space]
    return (head.rstrip(_TRAILING) or _prefix(label, limit - 1)) + "…"


def _prefix(text: str, limit: int) -> str:
    """The longest prefix of `text` within `limit` UTF-16 units (whole characters)."""
    units = 0
    for index, char in enumerate(text):
        units += utf16_length(char)
        if units > limit:
            return text[:index]
    return text


def _cut(line: str, limit: int) -> str:
    """The longest prefix of `line` within `limit` UTF-16 units, ending at a space if possible."""
    head = _prefix(line, limit)
    space = head.rfind(" ")
    return head[: space + 1] if space > 0 else head
