"""Passwords kept out of everything the service prints. No I/O here.

A database password can arrive as a URL's userinfo (`postgresql://u:S3CRET@host/db`), as a
query parameter (`?password=S3CRET`, which libpq accepts) or as libpq's PGPASSWORD variable.
`redacted_url` hides the first two in a URL meant for a log line; `scrub` replaces every known
secret value wherever it appears in a rendered line (an exception message, a traceback's
locals), as the last step of every log line.
"""

import os
from collections.abc import Iterable
from urllib.parse import parse_qsl

from sqlalchemy import make_url

MASK = "***"
# libpq connection parameters that carry a secret
SECRET_PARAMETERS = frozenset({"password", "sslpassword"})
SECRET_VARIABLES = ("PGPASSWORD",)


def redacted_url(url: str) -> str:
    """The URL with its password hidden, in the userinfo and in the query alike."""
    parsed = make_url(url)
    query = {
        name: (MASK if name.lower() in SECRET_PARAMETERS else value)
        for name, value in parsed.query.items()
    }
    rendered = parsed.set(query=query).render_as_string(hide_password=True)
    return rendered.replace("%2A%2A%2A", MASK)  # the mask as written, not percent-encoded


def secrets_in(urls: Iterable[str | None]) -> set[str]:
    """Every password the URLs and the environment carry."""
    found = {os.environ.get(name, "") for name in SECRET_VARIABLES}
    for url in filter(None, urls):
        parsed = make_url(url)
        found.add(parsed.password or "")
        found |= {
            value
            for name, value in parse_qsl(url.partition("?")[2])
            if name.lower() in SECRET_PARAMETERS
        }
    return {secret for secret in found if secret}


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every occurrence of each secret replaced by the mask."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text
