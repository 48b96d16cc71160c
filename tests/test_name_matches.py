"""A page with a name filter collects the matches by the trigram index and sorts them when the
planner expects few, and walks the sort's index otherwise (app/api/name_matches.py).

Either way the pages are exactly those of the filter alone, in the sort's order: the oracle is
PostgreSQL itself, the same conditions ordered by (sort key, id), with no shortcut.
"""

import json
import random
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from app.api import crew
from app.api.crew import escape_like
from app.db import get_engine
from tests import synthetic_sets
from tests.conftest import query_one
from tests.test_query_plans import LIMIT, LOAD, nodes_where, plan_of, problems
from tests.test_walk_start import every_page

ORDER = {
    "name": "name",
    "agency": "coalesce(lower(agency), '')",
    "status": "status",
    "updated_at": "updated_at",
}
SORTS = [f"{direction}{key}" for key in ORDER for direction in ("", "-")]
AGENCIES = ["NASA", "nasa", "ESA", "İSRO", "Zz Last", None]
STATUSES = ["active", "inactive", "retired", "unknown"]
INSERT = """
INSERT INTO crew (id, name, status, agency, launches, updated_at, deleted_at)
VALUES (:id, :name, :status, :agency, '{}', now() - make_interval(secs => :age),
    CASE WHEN :deleted THEN now() END)
"""
FILTERED = """
SELECT id FROM crew
WHERE lower(name) LIKE lower(:pattern) ESCAPE '\\' AND (:deleted OR deleted_at IS NULL)
    AND (CAST(:agency AS text) IS NULL OR coalesce(lower(agency), '') = lower(:agency))
ORDER BY {key} {direction}, id {direction}
"""


def analyzed() -> None:
    """Statistics as after a run: the planner's row estimates the shortcut is chosen by."""
    with get_engine().connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE crew"))


def expected(name: str, sort: str, include_deleted: bool, agency: str | None) -> list[str]:
    key, direction = ORDER[sort.lstrip("-")], "DESC" if sort.startswith("-") else "ASC"
    values = {"pattern": f"%{escape_like(name)}%", "deleted": include_deleted, "agency": agency}
    with get_engine().connect() as connection:
        rows = connection.execute(text(FILTERED.format(key=key, direction=direction)), values)
        return [row.id for row in rows]


def mismatches(client: TestClient, name: str, agency: str | None) -> list[str]:
    found = []
    for sort in SORTS:
        for include_deleted in (False, True):
            want = expected(name, sort, include_deleted, agency)
            params = {"name": name, "sort": sort, "include_deleted": include_deleted, "limit": 10}
            if agency is not None:
                params["agency"] = agency
            if every_page(client, params) != want:
                found.append(f"{name!r} {sort} deleted={include_deleted} agency={agency}")
            offset_page = client.get("/crew", params=params | {"offset": 2}).json()
            if [item["id"] for item in offset_page["items"]] != want[2:12]:
                found.append(f"{name!r} {sort} deleted={include_deleted} agency={agency} offset")
    return found


def test_collected_and_walked_pages_are_those_of_the_filter_alone(client: TestClient) -> None:
    rng = random.Random(20261207)
    alphabet = "abcvicktorVICKTOR -_%\\'éİıßÅ0129"
    names = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 14))) for _ in range(300)]
    # A third hold "vic" in some case: too many to collect, so that text's pages walk.
    names[::3] = [name[:3] + rng.choice(["vic", "Vic", "VIC"]) + name[3:] for name in names[::3]]
    with get_engine().begin() as connection:
        for i, name in enumerate(names):
            row = {
                "id": f"{i:024x}", "name": name, "status": rng.choice(STATUSES),
                "agency": rng.choice(AGENCIES), "age": rng.choice([0, 1, 2, 60, 3600]),
                "deleted": rng.random() < 0.2,
            }  # fmt: skip
            connection.execute(text(INSERT), row)
    analyzed()
    texts = ["vic", "VICTOR", "ßÅ0", "%\\'", "zzz"]
    texts += [piece for piece in (rng.choice(names)[2:6] for _ in range(3)) if piece.strip()]

    for name, collected in (("vic", False), ("VICTOR", True)):
        plan = plan_of(client, f"/crew?name={name}&sort=agency&limit=10")
        assert bool(nodes_where(plan, "Subplan Name", "CTE matches")) == collected, name

    found = [m for name in texts for m in mismatches(client, name, None)]
    found += mismatches(client, "vic", "nasa") + mismatches(client, "kto", "Zz Last")
    assert found == []


def load(dataset: str, rows: int) -> list[dict[str, Any]]:
    records = [synthetic_sets.SETS[dataset](i, rows, 0) for i in range(rows)]
    with get_engine().begin() as connection:
        connection.execute(text(LOAD), {"records": json.dumps(records)})
    analyzed()
    return records


def walks(plan: dict[str, Any]) -> list[str]:
    """The indexes of crew the page's executed plan reads in a sort's order."""
    (page,) = nodes_where(plan, "Subplan Name", "CTE page")
    scans = nodes_where(page, "Node Type", "Index Scan")
    scans += nodes_where(page, "Node Type", "Index Only Scan")
    walked = [n for n in scans if n.get("Relation Name") == "crew"]
    return [n["Index Name"] for n in walked if n["Index Name"] != "crew_pkey"]  # pkey: by id


def test_few_matches_sharing_the_agency_that_sorts_last_are_collected_not_walked(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`match-1pct`: the 40 members of 4,000 whose name holds "ann" are all in JAXA, which a
    walk in agency order reaches after half the table or more. The page collects the 40 (by the
    trigram index at 200,000 rows; at 4,000 a scan is cheaper) and sorts them, for every sort,
    and walks no index; paired with an agency none of them is in, it finds no row to return,
    where a walk of that agency would pass all of it."""
    monkeypatch.setattr(crew, "ESTIMATE_ABOVE", -1)  # `total` as the estimate: no count
    records = load("match-1pct", 4000)
    matching = [r for r in records if "ann" in r["name"].lower()]
    assert len(matching) == 40 and {r["agency"] for r in matching} == {"JAXA"}
    urls = {f"/crew?name=ann&sort={sort}&limit={LIMIT}": 40 for sort in SORTS}
    urls |= {f"/crew?name=ann&agency=NASA&sort={s}&limit={LIMIT}": 0 for s in ("name", "-agency")}
    for url, matches in urls.items():
        plan = plan_of(client, url)
        (collected,) = nodes_where(plan, "Subplan Name", "CTE matches")
        assert collected["Actual Rows"] == matches, url
        assert walks(plan) == [], (url, walks(plan))
    assert client.get(f"/crew?name=ann&agency=NASA&limit={LIMIT}").json()["items"] == []


def test_many_matches_are_walked_in_sort_order_not_collected(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`match-25pct`: a thousand matches; collecting them would read all thousand for a page of
    ten, which the walk in sort order finds after about forty rows."""
    monkeypatch.setattr(crew, "ESTIMATE_ABOVE", -1)
    load("match-25pct", 4000)
    for sort in ("name", "-status", "updated_at"):
        plan = plan_of(client, f"/crew?name=ann&sort={sort}&limit={LIMIT}")
        assert not nodes_where(plan, "CTE Name", "matches"), sort
        assert walks(plan) and problems(plan) == [], sort


def walked_rows(plan: dict[str, Any]) -> int:
    """The rows of crew the page's walks in sort order returned, the matches and the others."""
    (page,) = nodes_where(plan, "Subplan Name", "CTE page")
    scans = nodes_where(page, "Node Type", "Index Scan")
    scans += nodes_where(page, "Node Type", "Index Only Scan")
    walked = [n for n in scans if n.get("Relation Name") == "crew"]
    return sum(n["Actual Rows"] + n.get("Rows Removed by Filter", 0) for n in walked)


def test_many_matches_sharing_one_agency_are_walked_from_that_agency(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`match-25pct`: the thousand members of 4,000 whose name holds "ann" are all in JAXA, too
    many to collect. A walk in agency order starts at JAXA, both ways, and passes no member of
    the agencies before it (crew_name_trigrams, migration 0016); paired with an agency none of
    them is in, the page walks nothing at all (nor with a status none of them has)."""
    monkeypatch.setattr(crew, "ESTIMATE_ABOVE", -1)
    records = load("match-25pct", 4000)
    assert {r["agency"] for r in records if "ann" in r["name"].lower()} == {"JAXA"}
    for sort in ("agency", "-agency"):
        plan = plan_of(client, f"/crew?name=ann&sort={sort}&limit={LIMIT}")
        assert not nodes_where(plan, "CTE Name", "matches"), sort
        assert walks(plan) == ["ix_crew_agency_key_id"], sort
        assert walked_rows(plan) == LIMIT + 1, sort  # the page and the one after: all matches
        ids = [
            item["id"]
            for item in client.get(f"/crew?name=ann&sort={sort}&limit=50").json()["items"]
        ]
        assert ids == expected("ann", sort, False, None)[:50], sort
    for pair in ("agency=NASA", "agency=nasa&sort=-agency", "agency=Nobody&sort=-status"):
        plan = plan_of(client, f"/crew?name=ann&{pair}&limit={LIMIT}")
        assert walked_rows(plan) == 0, pair
        assert client.get(f"/crew?name=ann&{pair}").json()["items"] == []
    jaxa = client.get(f"/crew?name=ann&agency=JAXA&sort=-agency&limit={LIMIT}").json()
    assert [item["id"] for item in jaxa["items"]] == expected("ann", "-agency", False, "JAXA")[
        :LIMIT
    ]


def test_without_the_trigram_index_the_page_walks(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server without pg_trgm has no trigram index: collecting would read the whole table."""
    monkeypatch.setattr(crew, "ESTIMATE_ABOVE", -1)
    load("match-1pct", 4000)
    url = f"/crew?name=ann&sort=-agency&limit={LIMIT}"
    assert nodes_where(plan_of(client, url), "Subplan Name", "CTE matches")
    definition = query_one("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_crew_name_trgm'")
    with get_engine().begin() as connection:
        connection.execute(text("DROP INDEX ix_crew_name_trgm"))
    try:
        plan = plan_of(client, url)
        assert not nodes_where(plan, "Subplan Name", "CTE matches")  # the planner's own plan
        ids = [item["id"] for item in client.get(url).json()["items"]]
        assert ids == expected("ann", "-agency", False, None)[:LIMIT]
    finally:
        with get_engine().begin() as connection:
            connection.execute(text(definition[0]))
