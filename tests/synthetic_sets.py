"""Synthetic data sets that vary what a filter matches, for the stand-in upstream and the bench.

Each set is a pure function of (index, count, version) -> record: deterministic, computed on
demand (200,000 records are never held), ids growing with the index. `current` is the set the
bench always used (tests/fake_upstream.py: synthetic_crew). In the others a name is a first and
a last name (47 x 44 = 2,068 distinct names, as many as a real roster of that size shows),
agencies and statuses cycle as in `current`, and the needle `ann` (NEEDLE) is in the names of
exactly the records a set says, spread evenly over the ids and the alphabet:

- `match-1`, `match-100`: 1 and 100 records match `name=ann`;
- `match-1pct`, `match-6pct`, `match-25pct`, `match-80pct`: that share of the records;
- `few-names`: 6 distinct names, one of which (a sixth of the records) holds the needle;
- `many-names`: every name distinct (the index in it), 6 % matching;
- `one-agency`: 6 % matching, and 95 % of the records in agency NASA, the rest spread over 19.
"""

from collections.abc import Callable
from typing import Any

NEEDLE = "ann"
# First and last names without the needle; 47 x 44 = 2,068 combinations.
FIRST = (
    "Robert Victor Koichi Matthias Sergei Yuri Valentina Peggy Sally Mae Chris Tim Thomas Luca "
    "Samantha Andre Frank Kate Jessica Megan Raja Kayla Bob Doug Jeff Mike Sunita Butch Oleg "
    "Pyotr Akihiko Soichi Norishige Kimiya Satoshi Alexander Paolo Ulf Pedro Jasmin Warren "
    "Loral Woody Nicole Josh Koch Steve"
).split()
LAST = (
    "Behnken Hurley Glover Walker Hopkins Noguchi Rubins Kimbrough McArthur Pesquet Vande "
    "Hei Chari Marshburn Barron Maurer Cassada Rubio Mogensen Furukawa Moghbeli Mogh Bowen "
    "Hoburg Alneyadi Fedyaev Isaacman Poteet Menon Gillis Kopra Cristoforetti Lindgren Watkins "
    "Hines Lopez Parmitano Fossum Fincke Gerst Wilmore Williams Dyson Tingle"
).split()
# Last names holding the needle, for the records that match: with any first name, so the matches
# spread over the whole name order (a walk in name order passes the others between them).
MATCHING_LAST = ("Hermann", "Mann", "Neumann", "Bergmann", "Hoffmann", "Baumann", "Lehmann")
AGENCIES = ("NASA", "SpaceX", "ESA", "JAXA")
OTHER_AGENCIES = tuple(f"Agency {n:02d}" for n in range(19))
STATUSES = ("active", "inactive", "retired", "unknown")
COMMON_LAUNCH = f"{0xC0FFEE:024x}"  # as tests/fake_upstream.py's


def spread(index: int, count: int, matches: int) -> bool:
    """Whether record `index` is one of `matches` records spread evenly over `count`."""
    if matches <= 0:
        return False
    return index * matches // count != (index + 1) * matches // count


def person(index: int, matching: bool) -> str:
    mixed = index * 2_654_435_761 % 2**32  # a multiplicative hash: neighbours get far names
    first = FIRST[mixed % len(FIRST)]
    if matching:
        return f"{first} {MATCHING_LAST[mixed // 7 % len(MATCHING_LAST)]}"
    return f"{first} {LAST[mixed // 7 % len(LAST)]}"


def record(index: int, name: str, agency: str) -> dict[str, Any]:
    launches = [f"{index % 997:024x}", f"{(index * 7) % 991 + 1000:024x}"]
    if index // 128 % 4 == 0:  # a quarter flew on COMMON_LAUNCH, as in `current`
        launches.append(COMMON_LAUNCH)
    return {
        "name": name,
        "agency": agency,
        "image": f"https://i.imgur.com/{index:08d}.png",
        "wikipedia": f"https://en.wikipedia.org/wiki/Crewmember_{index}",
        "launches": launches,
        "status": STATUSES[index // 4 % 4],
        "id": f"{index:024x}",
    }


def versioned(name: str, version: int) -> str:
    return f"{name} v{version}" if version else name


def matching_share(matches: Callable[[int], int]) -> Callable[[int, int, int], dict[str, Any]]:
    """A set of 2,068 distinct names where `matches(count)` records hold the needle."""

    def make(index: int, count: int, version: int) -> dict[str, Any]:
        name = person(index, spread(index, count, matches(count)))
        return record(index, versioned(name, version), AGENCIES[index % 4])

    return make


def few_names(index: int, count: int, version: int) -> dict[str, Any]:
    name = ("Hannah Glover", *(f"{FIRST[n]} {LAST[n]}" for n in range(5)))[index % 6]
    return record(index, versioned(name, version), AGENCIES[index % 4])


def many_names(index: int, count: int, version: int) -> dict[str, Any]:
    name = f"{person(index, spread(index, count, count * 6 // 100))} {index}"
    return record(index, versioned(name, version), AGENCIES[index % 4])


def one_agency(index: int, count: int, version: int) -> dict[str, Any]:
    name = person(index, spread(index, count, count * 6 // 100))
    agency = "NASA" if index % 20 else OTHER_AGENCIES[index // 20 % 19]
    return record(index, versioned(name, version), agency)


SETS: dict[str, Callable[[int, int, int], dict[str, Any]]] = {
    "match-1": matching_share(lambda count: 1),
    "match-100": matching_share(lambda count: 100),
    "match-1pct": matching_share(lambda count: count // 100),
    "match-6pct": matching_share(lambda count: count * 6 // 100),
    "match-25pct": matching_share(lambda count: count // 4),
    "match-80pct": matching_share(lambda count: count * 4 // 5),
    "few-names": few_names,
    "many-names": many_names,
    "one-agency": one_agency,
}
