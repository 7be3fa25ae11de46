"""Reading configured SQL (a reprocess query, a drill probe) just far enough to refuse, when it is saved, what is
obviously more than one statement: a `;` outside quotes and comments with more SQL after it.

This is the friendly refusal, not the guard. At run time the query goes out on the extended query protocol, and the
server itself refuses several statements in one request (backups/readonly.py). So the scanner errs towards saying
nothing: what it cannot read (an unterminated quote) it leaves to the server.
"""

from __future__ import annotations

import re

# A dollar-quote's opening tag ($$ or $name$); `$1` is a parameter, not a tag.
_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$")


def _is_identifier_char(char: str) -> bool:
    return char.isalnum() or char in "_$" or ord(char) >= 0x80


def _skip_quoted(text: str, start: int, quote: str, backslashes: bool) -> int:
    """The index just past the quote opened at `start` (doubled quotes escape it; in E'' strings, backslashes do
    too), or len(text) when it never closes."""
    i = start + 1
    while i < len(text):
        char = text[i]
        if backslashes and char == "\\":
            i += 2
            continue
        if char == quote:
            if i + 1 < len(text) and text[i + 1] == quote:
                i += 2
                continue
            return i + 1
        i += 1
    return len(text)


def _skip_block_comment(text: str, start: int) -> int:
    """Past the /* comment */ at `start`; PostgreSQL nests them."""
    depth, i = 0, start
    while i < len(text):
        pair = text[i : i + 2]
        if pair == "/*":
            depth, i = depth + 1, i + 2
        elif pair == "*/":
            depth, i = depth - 1, i + 2
            if depth == 0:
                return i
        else:
            i += 1
    return len(text)


def _skip_noise(text: str, i: int) -> int:
    """Past the one comment or quoted part starting at `i`, or `i` itself when there is none."""
    char, pair = text[i], text[i : i + 2]
    if pair == "--":
        end = text.find("\n", i)
        return len(text) if end < 0 else end + 1
    if pair == "/*":
        return _skip_block_comment(text, i)
    if char in "'\"":
        escaped = char == "'" and i > 0 and text[i - 1] in "eE" and not (i >= 2 and _is_identifier_char(text[i - 2]))
        return _skip_quoted(text, i, char, backslashes=escaped)
    if char == "$" and not (i and _is_identifier_char(text[i - 1])):
        match = _DOLLAR_TAG.match(text, i)
        if match:
            end = text.find(match.group(), match.end())
            return len(text) if end < 0 else end + len(match.group())
    return i


def sql_statement_count(text: str) -> int:
    """How many statements `text` holds, read as PostgreSQL splits them: 0 for only blanks and comments, and a
    trailing `;` does not start another one."""
    count, in_statement, i = 0, False, 0
    while i < len(text):
        char = text[i]
        after = _skip_noise(text, i)
        is_comment = text.startswith(("--", "/*"), i)
        if char == ";":
            in_statement = False
        elif not char.isspace() and not is_comment and not in_statement:
            count, in_statement = count + 1, True  # a word, a symbol or a quoted part starts a statement
        i = after if after != i else i + 1
    return count
