"""How `GET /crew` computes `total`, chosen by the client as PostgREST lets it: the `count=`
query parameter or `Prefer: count=...` (RFC 7240). No database here.

- `planned` (the default): the planner's estimate from the table statistics, made exact where
  the page itself proves the number (a first page holding every match, a last page by offset)
  and never below what the page has seen. Costs a plan, never a scan, for every query.
- `estimated`: exact by count(*) when the planner expects at most a bound of matches, else as
  `planned`.
- `exact`: always count(*) of every match; costs a scan of the matches.
"""

from app.shapes import NamedEnum


class CrewCount(NamedEnum):
    """How `total` is computed; see the operation's description."""

    planned = "planned"
    estimated = "estimated"
    exact = "exact"


DEFAULT = CrewCount.planned


def preferred(prefer_headers: list[str]) -> CrewCount | None:
    """The `count` preference of the request's Prefer headers, if any names a known one.
    Preferences are comma-separated, each `token[=value][; param]`; unknown ones are ignored
    (RFC 7240 section 2), and of several `count` preferences the first known one counts."""
    for header in prefer_headers:
        for preference in header.split(","):
            token, _, value = preference.split(";", 1)[0].partition("=")
            if token.strip().lower() == "count":
                value = value.strip().strip('"').lower()
                if value in CrewCount.__members__:
                    return CrewCount(value)
    return None


def chosen(parameter: CrewCount | None, prefer_headers: list[str]) -> tuple[CrewCount, bool]:
    """The count mode to apply (the parameter wins over the header) and whether it is the one
    the Prefer header asked for, to be echoed in `Preference-Applied`."""
    asked = preferred(prefer_headers)
    mode = parameter or asked or DEFAULT
    return mode, asked is not None and asked == mode
