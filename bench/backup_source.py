"""The source databases of bench/backup_overhead.py (and, once made, of bench/restore_overhead.py):
`<prefix>_<size>g`, e.g. bench_src_1g, shaped like a document-processing product: `documents` plus `chunks`
(random text, float8[] embeddings), generated server-side with generate_series until pg_database_size() reaches
the size asked for. A database this module made carries its notes in `bench_meta` and is reused while they
match."""

from __future__ import annotations

import random
import sys
import time
from typing import Any

from harness.core import GIB, MIB, gb, say
from harness.pg import Pg

GENERATOR_VERSION = "1"
SENTENCES = 20_000
CHUNKS_PER_DOCUMENT = 20
# fmt: off
SYLLABLES = [
    "ka", "lo", "mi", "ne", "ra", "to", "shi", "den", "pro", "tra",
    "con", "ver", "sa", "mor", "el", "an", "is", "ul", "quo", "fin",
    "ber", "gal", "pen", "dro", "vi", "xe", "zu", "ment", "tion", "ing",
    "ex", "re", "de", "ba", "co", "lu", "ter", "or", "ist", "al",
]
# fmt: on


def size_label(size_gb: float) -> str:
    return f"{size_gb:g}".replace(".", "_") + "g"


def source_db_name(prefix: str, size_gb: float) -> str:
    return f"{prefix}_{size_label(size_gb)}"


SCHEMA_SQL = """
CREATE TABLE bench_meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE bench_sentences (id int PRIMARY KEY, s text NOT NULL);
CREATE TABLE documents (
    id          bigint PRIMARY KEY,
    tenant_id   int NOT NULL,
    title       text NOT NULL,
    source_uri  text NOT NULL,
    mime_type   text NOT NULL,
    status      text NOT NULL,
    page_count  int NOT NULL,
    metadata    jsonb NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE TABLE chunks (
    id          bigint PRIMARY KEY,
    document_id bigint NOT NULL REFERENCES documents (id),
    ordinal     int NOT NULL,
    content     text NOT NULL,
    token_count int NOT NULL,
    embedding   float8[] NOT NULL,
    created_at  timestamptz NOT NULL
);
CREATE INDEX chunks_document_id_idx ON chunks (document_id);
CREATE INDEX documents_tenant_created_idx ON documents (tenant_id, created_at);
"""

# 20 000 "sentences" of 6-24 pseudo-words drawn with a skew (a few words are frequent, as in real text).
SENTENCES_SQL = """
INSERT INTO bench_sentences (id, s)
SELECT g.id,
       initcap(string_agg((%(words)s::text[])[1 + floor(power(random(), 2.2) * %(n)s)::int], ' ')) || '.'
FROM generate_series(0, %(count)s::int - 1) AS g(id)
CROSS JOIN LATERAL generate_series(1, 6 + (g.id * 7) %% 19) AS k
GROUP BY g.id
"""

DOCUMENTS_SQL = """
INSERT INTO documents (id, tenant_id, title, source_uri, mime_type, status, page_count, metadata,
                       created_at, updated_at)
SELECT d,
       1 + (d * 37) %% 500,
       left((SELECT s FROM bench_sentences WHERE id = (d * 7919) %% %(sentences)s), 120),
       'tenants/' || (1 + (d * 37) %% 500) || '/uploads/' || md5(d::text) || '.pdf',
       (ARRAY['application/pdf', 'text/html', 'text/plain',
              'application/vnd.openxmlformats-officedocument.wordprocessingml.document'])[1 + d %% 4],
       (ARRAY['ready', 'ready', 'ready', 'ready', 'processing', 'failed'])[1 + d %% 6],
       1 + floor(random() * 80)::int,
       jsonb_build_object('language', (ARRAY['en', 'es', 'de', 'fr'])[1 + d %% 4],
                          'sha256', encode(sha256(d::text::bytea), 'hex'),
                          'ocr', d %% 3 = 0,
                          'uploaded_by', 'user-' || (d * 13) %% 977,
                          'labels', jsonb_build_array('batch-' || d / 1000, 'kind-' || d %% 7)),
       timestamptz '2023-01-01' + d * interval '61 seconds',
       timestamptz '2023-01-01' + d * interval '61 seconds' + floor(random() * 86400) * interval '1 second'
FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS d
"""

# A chunk: ~8 consecutive sentences from a random place (about 1 KB of text) and an embedding of `dims` float8
# holding float4-precision values (what a model's float32 output becomes once stored as float8[]).
CHUNKS_SQL = """
INSERT INTO chunks (id, document_id, ordinal, content, token_count, embedding, created_at)
SELECT c.id, (c.id - 1) / %(per_doc)s + 1, (c.id - 1) %% %(per_doc)s, t.content, length(t.content) / 4,
       e.embedding, timestamptz '2023-01-01' + c.id * interval '3 seconds'
FROM (SELECT g AS id, floor(random() * (%(sentences)s - 8))::int AS r
      FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS g) AS c
CROSS JOIN LATERAL (SELECT string_agg(s.s, ' ' ORDER BY s.id) AS content
                    FROM bench_sentences s WHERE s.id BETWEEN c.r AND c.r + 7) AS t
CROSS JOIN LATERAL (SELECT array_agg(((random() * 2 - 1)::float4)::float8) AS embedding
                    FROM generate_series(1, %(dims)s::int) WHERE c.id > 0) AS e
"""


def vocabulary(n: int = 4000) -> list[str]:
    rng = random.Random(42)
    words: set[str] = {"the", "of", "and", "to", "in", "a", "is", "for", "on", "that", "with", "as", "by", "be"}
    ordered = sorted(words)
    while len(ordered) < n:
        word = "".join(rng.choice(SYLLABLES) for _ in range(rng.choice((1, 2, 2, 3, 3, 4))))
        if word not in words:
            words.add(word)
            ordered.append(word)
    return ordered


def read_meta(pg: Pg, db: str) -> dict[str, str] | None:
    """The generator's notes in an existing database; None when it is not one of ours."""
    with pg.connect(db) as conn:
        if conn.execute("SELECT to_regclass('public.bench_meta')").fetchone()[0] is None:  # type: ignore[index]
            return None
        return dict(conn.execute("SELECT key, value FROM bench_meta").fetchall())


def ensure_source_db(pg: Pg, db: str, size_gb: float, dims: int, regenerate: bool) -> dict[str, Any]:
    target = int(size_gb * GIB)
    if pg.exists(db):
        meta = read_meta(pg, db)
        if meta is None:
            sys.exit(
                f"database {db} exists but was not made by this script (no bench_meta table); "
                f"drop it or choose another --src-db"
            )
        right = (
            meta.get("complete") == "1"
            and meta.get("generator_version") == GENERATOR_VERSION
            and meta.get("target_bytes") == str(target)
            and meta.get("dims") == str(dims)
        )
        if right and not regenerate:
            info = source_info(pg, db)
            say(
                f"  reusing {db}: {gb(info['size_bytes'])} on disk, {info['chunks']:,} chunks, "
                f"{info['documents']:,} documents (--regenerate to rebuild)"
            )
            return info
        say(f"  dropping {db} ({'--regenerate' if right else 'different size or generator'})")
        pg.drop(db)
    return generate_source_db(pg, db, target, dims)


def generate_source_db(pg: Pg, db: str, target: int, dims: int) -> dict[str, Any]:
    say(f"  generating {db} up to {gb(target)} on disk ({dims}-dimension float8[] embeddings)...")
    started = time.perf_counter()
    pg.create(db)
    with pg.connect(db) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute(SCHEMA_SQL)
        conn.execute(
            "INSERT INTO bench_meta VALUES ('generator_version', %s), ('target_bytes', %s), "
            "('dims', %s), ('complete', '0')",
            [GENERATOR_VERSION, str(target), str(dims)],
        )
        words = vocabulary()
        conn.execute(SENTENCES_SQL, {"words": words, "n": len(words), "count": SENTENCES})
        start_size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]  # type: ignore[index]
        size, next_chunk, batch = start_size, 1, 10_000
        while size < target:
            lo, hi = next_chunk, next_chunk + batch - 1
            params = {"lo": lo, "hi": hi, "dims": dims, "per_doc": CHUNKS_PER_DOCUMENT, "sentences": SENTENCES}
            doc_lo, doc_hi = (lo - 1) // CHUNKS_PER_DOCUMENT + 1, (hi - 1) // CHUNKS_PER_DOCUMENT + 1
            conn.execute(DOCUMENTS_SQL, {**params, "lo": doc_lo, "hi": doc_hi})
            conn.execute(CHUNKS_SQL, params)
            next_chunk = hi + 1
            size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]  # type: ignore[index]
            say(f"    {hi:>10,} chunks, {gb(size)} so far, {time.perf_counter() - started:5.0f} s")
            # Next batch: ~100 MB, or just what is missing (plus 2 %), so the size lands close to the target.
            per_chunk = max(1.0, (size - start_size) / hi)
            wanted = min(100 * MIB, (target - size) * 1.02) / per_chunk
            batch = max(1, int(wanted) // CHUNKS_PER_DOCUMENT + 1) * CHUNKS_PER_DOCUMENT
        say("    VACUUM (FREEZE, ANALYZE): sets hint bits so the timed dumps do not pay for the first read...")
        conn.execute("VACUUM (FREEZE, ANALYZE)")
        conn.execute("UPDATE bench_meta SET value = '1' WHERE key = 'complete'")
        conn.execute(
            "INSERT INTO bench_meta VALUES ('generated_seconds', %s)", [f"{time.perf_counter() - started:.0f}"]
        )
    info = source_info(pg, db)
    say(
        f"  generated {db}: {gb(info['size_bytes'])} on disk, {info['chunks']:,} chunks, "
        f"{info['documents']:,} documents in {time.perf_counter() - started:.0f} s"
    )
    return info


def source_info(pg: Pg, db: str) -> dict[str, Any]:
    with pg.connect(db) as conn:
        row = conn.execute(
            "SELECT pg_database_size(current_database()), (SELECT count(*) FROM documents), "
            "(SELECT count(*) FROM chunks), pg_total_relation_size('chunks'), pg_total_relation_size('documents'),"
            " pg_relation_size('chunks'), pg_total_relation_size(reltoastrelid) "
            "FROM pg_class WHERE oid = 'chunks'::regclass"
        ).fetchone()
    assert row is not None
    return {
        "db": db,
        "size_bytes": row[0],
        "documents": row[1],
        "chunks": row[2],
        "chunks_total_bytes": row[3],
        "documents_total_bytes": row[4],
        "chunks_heap_bytes": row[5],
        "chunks_toast_bytes": row[6],
    }
