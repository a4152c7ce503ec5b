"""What only the PostgreSQL store has: lost connections, a pool, concurrent starts, query plans.

The server can drop connections, several daemons may start at once, and the planner
must use the trigram and (key, id) indexes.

Runs when PostgreSQL tests run (MEDUSA_V2_TEST_PG_URL, or CI=true).
"""

from __future__ import annotations

import asyncio
import secrets
from urllib.parse import urlsplit

import pytest

from medusa_v2.listing import ListQuery
from medusa_v2.resources.ticket import TICKET
from medusa_v2.store import StoreUnavailable, store_from_url

pytestmark = pytest.mark.stores("postgresql")

NOW = 1_800_000_000.0


@pytest.fixture
def fresh_database(postgres_server_url):
    """Return the URL of a brand-new, empty database (dropped afterwards)."""
    import psycopg

    name = f"medusa_v2_test_{secrets.token_hex(6)}"
    with psycopg.connect(postgres_server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        admin.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    yield urlsplit(postgres_server_url)._replace(path="/" + name).geturl()
    with psycopg.connect(postgres_server_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def terminate_connections(url: str) -> int:
    """Kill every other backend of the database (as a server restart or failover would)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return len(rows)


@pytest.mark.gen_test(timeout=30)
async def test_lost_connections_are_503_then_recover_never_500(client, postgres_database):
    for i in range(3):
        assert (await client.post("/ticket", json_body={"title": f"t{i}"})).code == 201
    for _ in range(3):
        assert terminate_connections(postgres_database.url) >= 1
        seen = []
        for i in range(8):
            for method, path, body in (
                ("GET", "/ticket/1", None),
                ("GET", "/ticket?q=t1", None),
                ("POST", "/ticket", {"title": f"after {i}"}),
                ("PATCH", "/ticket/2", {"priority": 1 + i % 5}),
                ("GET", "/health", None),
            ):
                r = await client.request(method, path, json_body=body)
                assert r.code in (200, 201, 503), (method, path, r.code, r.body)
                if r.code == 503:
                    assert r.headers["Retry-After"].isdigit()
                seen.append(r.code)
        assert seen[-5:] == [200, 200, 201, 200, 200], seen  # recovered
    # every 201 is there
    listed = await client.get("/ticket?limit=1000")
    assert listed.code == 200


def test_store_unavailable_when_the_server_cannot_be_reached(io_loop):
    store = store_from_url("postgresql://postgres@127.0.0.1:1/nothing?connect_timeout=2")
    with pytest.raises(StoreUnavailable) as caught:
        io_loop.run_sync(store.open)
    assert "cannot connect" in str(caught.value)


def test_pool_size_parameters_are_ours_the_rest_is_libpq(postgres_server_url):
    store = store_from_url("postgresql://u@h:5/db?pool_min_size=3&sslmode=disable&pool_max_size=7")
    assert (store.url, store.min_size, store.max_size) == ("postgresql://u@h:5/db?sslmode=disable", 3, 7)
    with pytest.raises(ValueError, match="pool_max_size"):
        store_from_url("postgresql://u@h/db?pool_max_size=lots")


def test_concurrent_first_starts_do_not_race(io_loop, fresh_database):
    from medusa_v2.store.postgres import MIGRATIONS

    async def start_many():
        stores = [store_from_url(fresh_database + "?pool_min_size=1") for _ in range(5)]
        await asyncio.gather(*(s.open() for s in stores))
        try:
            async with stores[0].pool.connection() as conn:
                rows = await (await conn.execute("SELECT version FROM schema_version")).fetchall()
            row = await stores[1].insert_row(TICKET, {"title": "t"}, NOW)
            return rows, row
        finally:
            await asyncio.gather(*(s.close() for s in stores))

    rows, row = io_loop.run_sync(start_many)
    assert rows == [(len(MIGRATIONS),)]
    assert row["id"] == 1


def test_a_newer_schema_is_refused(io_loop, fresh_database):
    import psycopg

    store = store_from_url(fresh_database)
    io_loop.run_sync(store.open)
    io_loop.run_sync(store.close)
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(StoreUnavailable, match="newer"):
        io_loop.run_sync(store_from_url(fresh_database).open)


async def until(check, seconds: float = 5.0) -> None:
    """Wait until `check()` (a coroutine function) returns true, or fail."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "not within the deadline"
        await asyncio.sleep(0.01)


def terminate_listeners(url: str) -> int:
    import psycopg

    from medusa_v2.store.postgres import LISTENER_NAME

    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = %s",
            (LISTENER_NAME,),
        ).fetchall()
    return len(rows)


@pytest.mark.gen_test(timeout=30)
async def test_revocations_are_checked_in_memory_and_reach_every_process(fresh_database):
    import psycopg

    a, b = store_from_url(fresh_database), store_from_url(fresh_database)
    await a.open()
    await b.open()
    try:

        async def live():
            return a.revocations_live and b.revocations_live

        await until(live)
        await a.revoke_token("jti-1", NOW)
        assert await a.is_token_revoked("jti-1")  # at once where it was revoked
        await until(lambda: b.is_token_revoked("jti-1"))  # by notification elsewhere
        # The checks really are in memory: a row written behind the stores' backs
        # (no notification) is not seen while they listen...
        async with await psycopg.AsyncConnection.connect(fresh_database, autocommit=True) as conn:
            await conn.execute("INSERT INTO revoked_token (jti, expires_at) VALUES ('jti-2', %s)", (NOW,))
        assert not await b.is_token_revoked("jti-2")
        # ...and without a listener they ask the table, until a new one has loaded it.
        assert terminate_listeners(fresh_database) == 2
        await until(lambda: b.is_token_revoked("jti-2"))
        await until(live)
        assert await a.is_token_revoked("jti-2") and await b.is_token_revoked("jti-1")
        assert not await b.is_token_revoked("jti-3")
    finally:
        await a.close()
        await b.close()


@pytest.mark.gen_test(timeout=30)
async def test_concurrent_one_row_reads_share_a_query_and_each_gets_its_own_answer(store, monkeypatch):
    from medusa_v2.store import NotFound

    made = [await store.insert_row(TICKET, {"title": f"t{i}"}, NOW) for i in range(3)]
    runs = []
    real_run = store._run

    async def counting_run(work, **kwargs):
        runs.append(kwargs)
        return await real_run(work, **kwargs)

    monkeypatch.setattr(store, "_run", counting_run)
    wanted = [made[0]["id"], made[1]["id"], made[0]["id"], 2**63 - 1, made[2]["id"]]
    got = await asyncio.gather(*(store.get_row(TICKET, i) for i in wanted), return_exceptions=True)
    assert len(runs) == 1  # five reads, one query
    assert [g["title"] for g in got if isinstance(g, dict)] == ["t0", "t1", "t0", "t2"]
    assert isinstance(got[3], NotFound) and got[3].id == 2**63 - 1  # int8 at its largest, in one array
    assert got[0] == got[2] and got[0] is not got[2]  # the same row, a dict for each caller
    got[0]["title"] = "changed by a caller"
    assert got[2]["title"] == "t0"
    # One read alone is one query too; a later iteration's reads are a new batch.
    assert (await store.get_row(TICKET, made[1]["id"]))["title"] == "t1"
    assert len(runs) == 2


@pytest.mark.gen_test(timeout=30)
async def test_a_batch_that_loses_its_connection_fails_every_read_with_503_and_recovers(store, postgres_database):
    made = await store.insert_row(TICKET, {"title": "t"}, NOW)
    assert terminate_connections(postgres_database.url) >= 1
    got = await asyncio.gather(*(store.get_row(TICKET, made["id"]) for _ in range(4)), return_exceptions=True)
    # Reads are retried on a fresh connection; if every attempt failed, each read is told so.
    assert all(isinstance(g, dict) for g in got) or all(isinstance(g, StoreUnavailable) for g in got), got
    assert (await store.get_row(TICKET, made["id"]))["title"] == "t"


@pytest.mark.gen_test(timeout=60)
async def test_a_big_import_leaves_the_tables_analysed_and_vacuumed(fresh_database, monkeypatch):
    import psycopg

    import medusa_v2.store.postgres.bulk as pg_bulk
    from medusa_v2.resources.message import MESSAGE
    from medusa_v2.store.base import Tree, timestamp

    monkeypatch.setattr(pg_bulk, "ANALYZE_AFTER", 50)  # read by import_rows, in bulk.py
    store = store_from_url(fresh_database)
    await store.open()
    try:
        stamp = timestamp(NOW)
        row = {"description": "", "state": "open", "priority": 3, "assignee": None}
        row.update(created_at=stamp, updated_at=stamp)
        # 100 combinations of filter values, in 5 batches: each combination's totals row is
        # written once at the end (the triggers stand aside), so no dead versions pile up.
        rows = [({"id": i, "title": f"t{i}", **row, "assignee": f"a{i % 100}"}, ([],)) for i in range(1, 501)]
        tree = Tree(TICKET, (Tree(MESSAGE),))

        async def batches():
            for start in range(0, 500, 100):
                yield tree, rows[start : start + 100]

        assert await store.import_rows([tree], batches()) == 500
    finally:
        await store.close()
    async with await psycopg.AsyncConnection.connect(fresh_database, autocommit=True) as conn:
        cur = await conn.execute("SELECT pg_relation_size('ticket__totals'), COUNT(*), SUM(_total) FROM ticket__totals")
        size, cells, total = await cur.fetchone()
        assert (cells, total) == (100, 500)
        assert size <= 16384  # two 8 kB pages: each row written once, not one version per batch

    async def done():
        async with await psycopg.AsyncConnection.connect(fresh_database, autocommit=True) as conn:
            cur = await conn.execute(
                "SELECT vacuum_count, analyze_count"  # ours, not autovacuum's
                " FROM pg_stat_user_tables WHERE relname = 'ticket'"
            )
            vacuums, analyses = await cur.fetchone()
        return vacuums >= 1 and analyses >= 1

    await until(done)  # statistics reach pg_stat_user_tables within a second or so


# -- query plans on a few hundred thousand rows --

ROWS = 200_000


@pytest.fixture(scope="module")
def big_database(postgres_server_url):
    """Build a database of ROWS tickets (random words), analysed, once for the module."""
    import psycopg

    name = f"medusa_v2_test_big_{secrets.token_hex(4)}"
    with psycopg.connect(postgres_server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = urlsplit(postgres_server_url)._replace(path="/" + name).geturl()
    loop = asyncio.new_event_loop()
    store = store_from_url(url + "?pool_min_size=1")
    loop.run_until_complete(store.open())
    loop.run_until_complete(store.close())
    loop.close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET maintenance_work_mem = '128MB'")
        # Fill without the trigram indexes, then build them (much faster than row by row).
        conn.execute("DROP INDEX ticket_title_trgm, ticket_description_trgm")
        conn.execute(
            """
            INSERT INTO ticket (id, title, description, state, priority, assignee, created_at, updated_at)
            SELECT g,
                   'printer ' || md5(g::text),
                   'desc ' || md5((g * 7)::text) || CASE WHEN g %% 1000 = 0 THEN ' 100%% done_x' ELSE '' END,
                   (ARRAY['open', 'pending', 'closed'])[1 + g %% 3],
                   1 + g %% 5,
                   CASE WHEN g %% 4 = 0 THEN NULL ELSE 'user' || (g %% 50) END,
                   to_char(timestamp '2026-01-01' + g * interval '1 second', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                   to_char(timestamp '2026-01-01' + g * interval '1 second', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
            FROM generate_series(1, %s) g
            """,
            (ROWS,),
        )
        conn.execute('CREATE INDEX ticket_title_trgm ON ticket USING gin (title COLLATE "default" gin_trgm_ops)')
        conn.execute(
            'CREATE INDEX ticket_description_trgm ON ticket USING gin (description COLLATE "default" gin_trgm_ops)'
        )
        conn.execute("VACUUM ANALYZE ticket")
    yield url
    with psycopg.connect(postgres_server_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def explain(url: str, query: ListQuery) -> tuple[str, str]:
    """Return the plans of the page statement and of the count, as list_rows builds them."""
    import psycopg

    from medusa_v2.store.postgres import _order_by, _where, page_sql, search_sql

    where, params = _where(TICKET, query, None)
    if query.q:  # one statement finds the matches once, for both the page and the count
        page = count = search_sql(TICKET, '"ticket"', where, query.sort)
        count_args = [*params, query.limit, query.offset]
    else:
        page = page_sql('"ticket"', where, _order_by(TICKET, query.sort))
        count, count_args = f'SELECT COUNT(*) FROM "ticket"{where}', params
    with psycopg.connect(url, autocommit=True) as conn:
        plans = []
        for sql, args in ((page, [*params, query.limit, query.offset]), (count, count_args)):
            rows = conn.execute("EXPLAIN " + sql, args, prepare=False).fetchall()
            plans.append("\n".join(r[0] for r in rows))
    return plans[0], plans[1]


@pytest.mark.parametrize("q", ["printer 0a1b", "100% done_x", "DONE_X", "c0ffee1"])
def test_q_uses_the_trigram_indexes(big_database, q):
    page, count = explain(big_database, ListQuery(q=q))
    for plan in (page, count):
        assert "ticket_title_trgm" in plan and "ticket_description_trgm" in plan, plan
        assert "Seq Scan" not in plan, plan


@pytest.mark.parametrize(
    "query",
    [
        ListQuery(),
        ListQuery(sort=(("priority", True),)),
        ListQuery(sort=(("assignee", False),)),
        ListQuery(sort=(("assignee", True),)),
        ListQuery(sort=(("updated_at", True),)),
        ListQuery(sort=(("title", False),)),
        ListQuery(filters={"state": ("open",)}, sort=(("updated_at", True),)),
        ListQuery(filters={"state": ("open",)}, sort=(("priority", True),)),
        ListQuery(sort=(("priority", True), ("updated_at", False))),
        ListQuery(filters={"state": ("open",)}, sort=(("priority", True), ("updated_at", False))),
    ],
)
def test_sorted_pages_are_read_in_index_order(big_database, query):
    page, _ = explain(big_database, query)
    assert "Index" in page and "Sort" not in page.split("Limit", 1)[1].split("Index", 1)[0], page
    assert "Seq Scan" not in page, page


DEEP_QUERIES = [
    ListQuery(page=2_000, limit=50),
    ListQuery(page=60, limit=20, sort=(("priority", True), ("updated_at", False))),
    ListQuery(page=70, limit=20, filters={"state": ("open",)}, sort=(("priority", True), ("updated_at", False))),
    ListQuery(page=55, limit=25, sort=(("assignee", True),)),
]


@pytest.mark.parametrize("query", DEEP_QUERIES)
def test_deep_pages_skip_rows_on_an_index_alone(big_database, query):
    import psycopg

    from medusa_v2.store.postgres import DEEP_OFFSET, _order_by, _where, page_sql

    assert query.offset >= DEEP_OFFSET
    where, params = _where(TICKET, query, None)
    sql = page_sql('"ticket"', where, _order_by(TICKET, query.sort), deep=True)
    with psycopg.connect(big_database, autocommit=True) as conn:
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql, [*params, query.limit, query.offset]))
    assert "Index Only Scan" in plan and "Seq Scan" not in plan, plan


@pytest.mark.parametrize("query", DEEP_QUERIES)
def test_deep_pages_hold_the_rows_the_plain_query_finds(io_loop, big_database, query):
    import psycopg

    from medusa_v2.store.postgres import _order_by, _where, page_sql

    where, params = _where(TICKET, query, None)
    plain = page_sql('"ticket"', where, _order_by(TICKET, query.sort))
    with psycopg.connect(big_database, autocommit=True) as conn:
        expected = [r[0] for r in conn.execute(plain, [*params, query.limit, query.offset])]
    store = store_from_url(big_database + "?pool_min_size=1")
    io_loop.run_sync(store.open)
    try:
        page = io_loop.run_sync(lambda: store.list_rows(TICKET, query))
    finally:
        io_loop.run_sync(store.close)
    assert [r["id"] for r in page.rows] == expected and len(expected) == query.limit


def test_q_results_match_at_scale(io_loop, big_database):
    store = store_from_url(big_database + "?pool_min_size=1")
    io_loop.run_sync(store.open)
    try:
        page = io_loop.run_sync(lambda: store.list_rows(TICKET, ListQuery(q="100% DONE_X", limit=5)))
        assert page.count == ROWS // 1000
        assert [r["id"] for r in page.rows] == [1000, 2000, 3000, 4000, 5000]
        nothing = io_loop.run_sync(lambda: store.list_rows(TICKET, ListQuery(q="100_ done%x")))
        assert nothing.count == 0
    finally:
        io_loop.run_sync(store.close)
