"""Where a name-sorted walk with a name filter starts (crew_name_trigrams, migration 0012): the
pages are exactly those of the filter alone, whatever the names, the text, and the writes since.

The oracle is PostgreSQL itself: the same filter (lower(name) LIKE the escaped text), ordered
by (name, id), with no start bound.
"""

import random
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from app.api.crew import escape_like
from app.db import get_engine
from tests.conftest import ingest, query_one
from tests.fake_upstream import FakeUpstream, synthetic_crew

# Names where a text's trigrams say little (unicode, digits, punctuation, case, a Turkish
# dotted capital I whose lower case is two characters) and names that cluster a text's matches
# at one end of the order (every "vic" a Victor, last).
NAMES = [
    "Anna Smith", "Anna Vickers", "Ada Lovic", "Zoë Ångström", "İlker Işık", "ILKER ISIK",
    "Straße Weiß", "José Núñez", "Jo-Vic O'Brien", "R2 D2", "vic", "Vic", "VICTOR", "x_vic%",
    "Émile Vicq", "Mary 100% Vic", "back\\slash vic", "日本 vic 宇宙", "Victor Zed", "Victor Alpha",
    "Victoria", "ab", "Zz vicz", "Ünal Vicente", "Li", "Nikola Tesla",
]  # fmt: skip
TEXTS = [
    "vic", "VIC", "Vic", "ic ", "vict", "victor a", "ctor", "x_v", "0%", "% vic", "\\sl", "İlk",
    "ilk", "ışı", "isik", "aße", "eiß", "ström", "日本 v", "vi", "v", "a", "zzz", "ann", "d2",
    "r2 d", " vic", "o'b", "-vi", "núñ",
]  # fmt: skip
INSERT = """
INSERT INTO crew (id, name, status, agency, launches, deleted_at)
VALUES (:id, :name, 'active', NULL, '{}', CASE WHEN :deleted THEN now() END)
"""
FILTERED = """
SELECT id FROM crew
WHERE lower(name) LIKE lower(:pattern) ESCAPE '\\' AND (:deleted OR deleted_at IS NULL)
ORDER BY name, id
"""


LOWEST_VIC = "SELECT min(lowest_name) FROM crew_name_trigrams WHERE trigram = 'vic'"
KNOWN = """
SELECT trigram, min(lowest_name) AS lowest_name, max(highest_name) AS highest_name,
    min(lowest_agency) AS lowest_agency, max(highest_agency) AS highest_agency,
    min(lowest_status) AS lowest_status, max(highest_status) AS highest_status
FROM crew_name_trigrams GROUP BY trigram
"""
# Each trigram's bounds in name, agency and status order, all of them as one value.
BOUNDS = f"SELECT jsonb_agg(b ORDER BY trigram) FROM ({KNOWN}) AS b"
# The trigrams of crew's names whose bounds do not cover them, in some order (migration 0016).
UNCOVERED = f"""
SELECT count(*) FROM crew, unnest(show_trgm(name_folded)) AS trigram
LEFT JOIN ({KNOWN}) AS k USING (trigram)
WHERE length(trigram) = 3 AND strpos(trigram, ' ') = 0 AND (
    k.trigram IS NULL OR name < k.lowest_name OR name > k.highest_name
    OR coalesce(lower(agency), '') NOT BETWEEN k.lowest_agency AND k.highest_agency
    OR status NOT BETWEEN k.lowest_status AND k.highest_status)
"""


def insert(rows: list[tuple[str, str, bool]]) -> None:
    with get_engine().begin() as connection:
        for row_id, name, deleted in rows:
            connection.execute(text(INSERT), {"id": row_id, "name": name, "deleted": deleted})


def expected(name: str, include_deleted: bool, descending: bool) -> list[str]:
    pattern = f"%{escape_like(name)}%"
    with get_engine().connect() as connection:
        found = connection.execute(text(FILTERED), {"pattern": pattern, "deleted": include_deleted})
        ids = [row.id for row in found]
    return ids[::-1] if descending else ids


def every_page(client: TestClient, params: dict[str, Any]) -> list[str]:
    """The ids of every page of GET /crew with `params`, by cursor."""
    ids: list[str] = []
    while True:
        response = client.get("/crew", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        ids += [item["id"] for item in body["items"]]
        if body["next"] is None:
            return ids
        params = params | {"cursor": body["next"]}


def walked(client: TestClient, name: str, sort: str, include_deleted: bool) -> list[str]:
    """Every page, by cursor, three rows at a time."""
    params = {"name": name, "sort": sort, "include_deleted": include_deleted, "limit": 3}
    return every_page(client, params)


def mismatches(client: TestClient, texts: list[str]) -> list[tuple[str, str, bool]]:
    found = []
    for name in texts:
        for sort in ("name", "-name"):
            for include_deleted in (False, True):
                want = expected(name, include_deleted, sort == "-name")
                if walked(client, name, sort, include_deleted) != want:
                    found.append((name, sort, include_deleted))
                offset_page = client.get(
                    "/crew",
                    params={"name": name, "sort": sort, "include_deleted": include_deleted,
                            "offset": 1, "limit": 2},
                ).json()  # fmt: skip
                if [item["id"] for item in offset_page["items"]] != want[1:3]:
                    found.append((name, f"{sort} offset", include_deleted))
    return found


def hex_id(number: int) -> str:
    return f"{number:024x}"


def test_name_sorted_pages_are_those_of_the_filter_alone(client: TestClient) -> None:
    insert([(hex_id(i), name, i % 5 == 4) for i, name in enumerate(NAMES)])
    assert query_one("SELECT count(*) FROM crew_name_trigrams")[0] > 0  # the trigger wrote

    assert mismatches(client, TEXTS) == []


def test_writes_after_the_load_move_the_start_never_past_a_match(client: TestClient) -> None:
    """A walk started from stale bounds would skip the members written since."""
    insert([(hex_id(i), name, False) for i, name in enumerate(NAMES)])
    assert mismatches(client, ["vic", "tor", "zed"]) == []  # the bounds exist, and are used
    with get_engine().begin() as connection:
        # renamed to the front of the order, and to the back
        connection.execute(text("UPDATE crew SET name = 'Aaron Vic' WHERE name = 'Victoria'"))
        connection.execute(text("UPDATE crew SET name = 'Zzyzx Tor' WHERE name = 'Li'"))
        connection.execute(text("UPDATE crew SET name = 'A Zed' WHERE name = 'ab'"))
    insert([(hex_id(900), "AAA vic tor zed", False)])

    assert mismatches(client, ["vic", "tor", "zed", "aaron", "zzyzx"]) == []
    # The rename away from the front leaves the bound wide, until a rebuild narrows it.
    with get_engine().begin() as connection:
        connection.execute(text("UPDATE crew SET name = 'Vic Moved' WHERE name = 'Aaron Vic'"))
        connection.execute(text("DELETE FROM crew WHERE name = 'AAA vic tor zed'"))
    assert query_one(LOWEST_VIC)[0] == "AAA vic tor zed"
    with get_engine().begin() as connection:
        connection.execute(text("SELECT crew_name_trigrams_rebuild()"))
    assert query_one(LOWEST_VIC)[0] == "Ada Lovic"
    assert mismatches(client, ["vic", "tor", "zed"]) == []


def test_random_names_and_texts_against_the_filter_alone(client: TestClient) -> None:
    rng = random.Random(20261126)
    alphabet = "abcvicktorVICKTOR -_%\\'éİıßÅ0129"
    names = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 14))) for _ in range(120)]
    insert([(hex_id(i), name, rng.random() < 0.2) for i, name in enumerate(names)])
    texts = []
    for _ in range(40):
        source = rng.choice(names)
        start = rng.randrange(len(source))
        piece = source[start : start + rng.randint(1, 6)]
        texts.append("".join(c.upper() if rng.random() < 0.3 else c for c in piece))

    assert mismatches(client, [text for text in texts if text.strip()]) == []


@pytest.mark.usefixtures("upstream")
def test_a_run_widens_the_bounds_for_what_it_loads(
    client: TestClient, upstream: FakeUpstream
) -> None:
    """The ingest's upsert (insert, then update on conflict) fires the trigger both ways."""
    upstream.records = [synthetic_crew(i) for i in range(200)]
    assert ingest(client)["status"] == "succeeded"
    first = query_one(LOWEST_VIC)[0]
    assert first == query_one("SELECT min(name) FROM crew WHERE name_folded LIKE '%vic%'")[0]

    renamed = [synthetic_crew(i) for i in range(200)]
    renamed[150]["name"] = "Aardvark Vic"  # an update that moves the first "vic" to the front
    upstream.records = renamed
    assert ingest(client)["status"] == "succeeded"

    low = query_one(LOWEST_VIC)[0]
    assert low == "Aardvark Vic"
    assert query_one(UNCOVERED)[0] == 0  # the run's own widening, in every order
    page = client.get("/crew", params={"name": "vic", "sort": "name", "limit": 1}).json()
    assert page["items"][0]["name"] == "Aardvark Vic"


def test_writers_that_widen_the_same_trigrams_never_wait_on_each_other(client: TestClient) -> None:
    """Each appends its own bound rows: no lock to wait on, so no deadlock and no
    serialization failure for a writer whose snapshot predates another's widening."""
    writers = [get_engine().connect() for _ in range(3)]
    try:
        first, second, repeatable = writers
        repeatable.execution_options(isolation_level="REPEATABLE READ")
        for writer in writers:
            writer.begin()
            writer.exec_driver_sql("SET LOCAL lock_timeout = '2s'")
        repeatable.exec_driver_sql("SELECT count(*) FROM crew_name_trigrams")  # its snapshot
        for writer, number, name in [
            (first, 1, "Qqa vic"), (second, 2, "Rrb xyz"),  # each widens a trigram first
            (first, 3, "Sss xyz"), (second, 4, "Ttt vic"),  # then the other's
        ]:  # fmt: skip
            writer.execute(text(INSERT), {"id": hex_id(number), "name": name, "deleted": False})
        first.commit()
        second.commit()
        repeatable.execute(text(INSERT), {"id": hex_id(5), "name": "Aaa vic", "deleted": False})
        repeatable.commit()
    finally:
        for writer in writers:
            writer.close()

    assert mismatches(client, ["vic", "xyz", "aaa"]) == []
    assert query_one(LOWEST_VIC)[0] == "Aaa vic"
