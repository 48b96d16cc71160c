"""Each validation rule, on the pure validate step."""

import json
from typing import Any

import pytest

from app.ingest.validate import SchemaDrift, check_page, validate_page

GOOD: dict[str, Any] = {
    "name": "Robert Behnken",
    "agency": "NASA",
    "image": "https://imgur.com/0smMgMH.png",
    "wikipedia": "https://en.wikipedia.org/wiki/Robert_L._Behnken",
    "launches": ["5eb87d46ffd86e000604b388"],
    "status": "active",
    "id": "5ebf1a6e23a9a60006e03a7a",
}


def reject_reasons(record: Any) -> list[tuple[str, str]]:
    page = validate_page([record])
    assert page.crew == [] and len(page.rejects) == 1
    return [(".".join(map(str, e["loc"])), e["type"]) for e in page.rejects[0].errors]


def test_a_good_record_passes_unchanged() -> None:
    page = validate_page([GOOD])

    assert page.rejects == []
    assert page.crew[0].model_dump(mode="json") == GOOD


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"id": "5ebf1a6e23a9a60006e03a7"}, ("id", "string_pattern_mismatch")),
        ({"id": "zzzzzzzzzzzzzzzzzzzzzzzz"}, ("id", "string_pattern_mismatch")),
        ({"id": 12}, ("id", "string_type")),
        ({"id": None}, ("id", "string_type")),
        ({"name": ""}, ("name", "string_too_short")),
        ({"name": "   "}, ("name", "string_too_short")),  # stripped first
        ({"name": "x\ud800"}, ("name", "string_unicode")),
        ({"name": "x" * 201}, ("name", "string_too_long")),
        ({"name": None}, ("name", "string_type")),
        ({"name": "nul\x00byte"}, ("name", "string_pattern_mismatch")),
        ({"status": "on leave"}, ("status", "enum")),
        ({"status": None}, ("status", "enum")),
        ({"agency": "A" * 101}, ("agency", "string_too_long")),
        ({"agency": 7}, ("agency", "string_type")),
        ({"image": "ftp://example.com/a.png"}, ("image", "string_pattern_mismatch")),
        ({"image": "not a url"}, ("image", "string_pattern_mismatch")),
        ({"wikipedia": "https://" + "w" * 2041}, ("wikipedia", "string_too_long")),
        ({"launches": "5eb87d46ffd86e000604b388"}, ("launches", "list_type")),
        ({"launches": ["nope"]}, ("launches.0", "string_pattern_mismatch")),
        ({"launches": [None]}, ("launches.0", "string_type")),
    ],
)
def test_invalid_fields_are_rejected_with_the_field_and_reason(
    change: dict[str, Any], reason: tuple[str, str]
) -> None:
    assert reject_reasons({**GOOD, **change}) == [reason]


@pytest.mark.parametrize(
    ("change", "stored"),
    [
        ({"name": "  Anne McClain \n"}, {"name": "Anne McClain"}),
        ({"agency": " NASA "}, {"agency": "NASA"}),
        ({"agency": "   "}, {"agency": None}),
        ({"launches": None}, {"launches": []}),
    ],
)
def test_surrounding_whitespace_and_null_launches_are_normalised(
    change: dict[str, Any], stored: dict[str, Any]
) -> None:
    page = validate_page([{**GOOD, **change}])

    assert page.rejects == []
    assert page.crew[0].model_dump(mode="json") == {**GOOD, **stored}


def test_missing_required_fields_are_named() -> None:
    assert reject_reasons({"agency": "NASA"}) == [
        ("id", "missing"),
        ("name", "missing"),
        ("status", "missing"),
    ]


@pytest.mark.parametrize("item", [None, 42, "crew", ["list"]])
def test_non_object_items_are_rejected(item: Any) -> None:
    assert reject_reasons(item) == [("", "model_attributes_type")]


def test_status_and_ids_are_normalised_and_launches_deduplicated() -> None:
    record = {
        **GOOD,
        "status": " Retired ",
        "id": GOOD["id"].upper(),
        "launches": ["5EB87D46FFD86E000604B388", "5eb87d46ffd86e000604b388"],
    }

    member = validate_page([record]).crew[0]

    assert (member.status, member.id) == ("retired", GOOD["id"])
    assert member.launches == ["5eb87d46ffd86e000604b388"]


def test_optional_fields_may_be_null_or_absent() -> None:
    record = {"id": GOOD["id"], "name": "A", "status": "unknown", "agency": None, "image": None}

    member = validate_page([record]).crew[0]

    assert (member.agency, member.image, member.wikipedia, member.launches) == (
        None,
        None,
        None,
        [],
    )


def test_a_bad_record_does_not_stop_the_rest_of_the_page() -> None:
    page = validate_page([GOOD, {**GOOD, "id": "bad"}, {**GOOD, "id": "a" * 24}])

    assert [m.id for m in page.crew] == [GOOD["id"], "a" * 24]
    assert [(r.record_id, r.raw["id"]) for r in page.rejects] == [("bad", "bad")]


def test_second_record_with_the_same_id_is_a_duplicate_reject() -> None:
    page = validate_page([GOOD, {**GOOD, "name": "Impostor"}])

    assert [m.name for m in page.crew] == ["Robert Behnken"]
    assert page.rejects[0].record_id == GOOD["id"]
    assert page.rejects[0].errors[0]["type"] == "duplicate_id"


def test_schema_drift_counts_unknown_and_missing_fields() -> None:
    drift = SchemaDrift()
    without_image = {k: v for k, v in GOOD.items() if k != "image"}

    drift.observe([{**GOOD, "rank": 1}, {**GOOD, "rank": 2, "crew_role": "x"}, without_image, 5])

    assert drift.as_json() == {
        "unknown_fields": {"crew_role": 1, "rank": 2},
        "missing_fields": {"image": 1},
    }


def test_a_checked_page_holds_its_valid_records_as_json_and_its_drift() -> None:
    page = check_page([{**GOOD, "rank": 1}, {**GOOD, "id": "bad", "rank": 2}], keep_rejects=5)

    assert json.loads(page.crew_json) == [GOOD] and page.valid == 1
    assert [r.record_id for r in page.rejects] == ["bad"] and page.rejected == 1
    assert page.drift.as_json() == {"unknown_fields": {"rank": 2}}


def test_a_checked_page_keeps_only_the_rejects_asked_for_but_counts_them_all() -> None:
    ids = [f"{n:024x}" for n in range(4)]
    records = [{**GOOD, "id": record_id, "status": "bad"} for record_id in ids]

    page = check_page(records, keep_rejects=1)

    assert [r.record_id for r in page.rejects] == ids[:1]
    assert page.rejected == 4 and page.kept_ids == ids
