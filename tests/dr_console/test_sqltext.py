"""The scanner that refuses, when a query is saved, what is obviously more than one statement."""

from __future__ import annotations

import pytest

from dr_console.sqltext import sql_statement_count


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("", 0),
        ("  -- only a comment\n/* and another */", 0),
        ("SELECT 1", 1),
        ("SELECT 1;", 1),
        ("SELECT 1 ;; -- done", 1),
        ("SELECT ';' AS semicolon", 1),
        ("SELECT 'it''s; fine'", 1),
        ("SELECT E'\\'; still the string'", 1),
        ('SELECT "odd;name" FROM t', 1),
        ("SELECT 1 -- ; DELETE FROM documents", 1),
        ("SELECT 1 /* outer /* ; inner */ ; still outer */", 1),
        ("SELECT $$;$$, $tag$ ; $$ ; $tag$", 1),
        ("SELECT a$b$; DELETE FROM documents", 2),  # `a$b$` is an identifier, not a dollar quote
        ("SELECT $1; DELETE FROM documents", 2),  # `$1` is a parameter
        ("SELECT 1; COMMIT; UPDATE documents SET status = 'READY'", 3),
        ("'x'; SELECT 1", 2),
        ("SELECT 1 /* never closed ; DELETE", 1),  # what it cannot read, the server decides
    ],
)
def test_statements_are_counted_as_postgresql_splits_them(text: str, count: int) -> None:
    assert sql_statement_count(text) == count
