"""The contract check: every response an API test receives is validated with openapi-core against
the service's own OpenAPI document (status, media type, body, required and typed headers), 503s
and 304s included. A HEAD response is checked as its GET's, headers only, and must have no body.

Nothing is skipped silently. Outside the document by design are only the routes the app leaves
out of it (`include_in_schema=False`: the document itself, /docs, /redoc and their assets,
/metrics). A response to a path or method the document does not have (a 404 of an unknown path,
a 405) fails the test that received it unless the test says it expects one
(`with expect_undeclared(client):`).
"""

import functools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from openapi_core import Config, OpenAPI
from openapi_core.casting.schemas import oas31_types_caster
from openapi_core.casting.schemas.factories import SchemaCastersFactory
from openapi_core.datatypes import RequestParameters
from openapi_core.deserializing.media_types.util import plain_loads
from openapi_core.validation.response.validators import V31ResponseHeadersValidator
from openapi_core.validation.schemas import oas31_schema_validators_factory
from openapi_core.validation.schemas.factories import DialectSchemaValidatorsFactory
from openapi_core.validation.schemas.validators import SchemaValidator
from starlette.routing import Match
from werkzeug.datastructures import Headers, ImmutableMultiDict


class ContractRequest:
    """An httpx request as openapi-core reads one."""

    def __init__(self, request: httpx.Request, method: str | None = None) -> None:
        self.request = request
        self.method = (method or request.method).lower()
        self.host_url = f"{request.url.scheme}://{request.url.netloc.decode()}"
        self.path = request.url.path
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(list(request.url.params.multi_items())),
            header=Headers(list(request.headers.items())),
            cookie=ImmutableMultiDict(),
        )
        self.content_type = request.headers.get("content-type", "")
        self.body = request.content or None


class ContractResponse:
    """An httpx response as openapi-core reads one."""

    def __init__(self, response: httpx.Response) -> None:
        self.status_code = response.status_code
        self.data = response.content
        self.content_type = response.headers.get("content-type", "")
        self.headers = Headers(list(response.headers.items()))


class SchemaValidatorsOnce(DialectSchemaValidatorsFactory):
    """openapi-core's validators of OpenAPI 3.1 schemas, each built once per document: it
    otherwise builds a jsonschema validator, with a deep copy of its format checker, for every
    schema of every response it checks (about 60 % of a test request's CPU). A validator
    keeps no state between values, and the document of one OpenAPI object never changes."""

    def __init__(self) -> None:
        base = oas31_schema_validators_factory
        super().__init__(
            base.schema_validator_cls, base.default_jsonschema_dialect_id, base.format_checker
        )
        self.built: dict[tuple[Any, ...], SchemaValidator] = {}

    def create(self, spec: Any, schema: Any, *args: Any, **kwargs: Any) -> SchemaValidator:
        key = (tuple(schema.parts), *map(frozen, args), *sorted(frozen(kwargs)))
        if key not in self.built:
            self.built[key] = super().create(spec, schema, *args, **kwargs)
        return self.built[key]


def frozen(value: Any) -> Any:
    """A hashable form of create()'s other arguments: flags, and dicts of format checks."""
    if isinstance(value, dict):
        return tuple(sorted((key, frozen(item)) for key, item in value.items()))
    return value


@functools.lru_cache(maxsize=4)
def validator_of(document: str) -> OpenAPI:
    """The validator of one document, built (and the document itself checked, which takes
    about a second) once per process, not once per test."""
    # an event stream is text, checked against its declared schema like text/plain
    text = {"text/event-stream": plain_loads}
    validators = SchemaValidatorsOnce()
    config = Config(
        extra_media_type_deserializers=text,
        schema_validators_factory=validators,
        schema_casters_factory=SchemaCastersFactory(validators, oas31_types_caster),
    )
    return OpenAPI.from_dict(json.loads(document), config=config)


class Contract:
    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.undeclared_expected = False

    @functools.cached_property
    def openapi(self) -> OpenAPI:
        return validator_of(json.dumps(self.app.openapi(), sort_keys=True))

    def outside_document(self, request: httpx.Request) -> bool:
        """Whether an app route left out of the document answers this path."""
        scope = {"type": "http", "path": request.url.path, "root_path": "", "method": "GET"}
        return any(
            route.matches(scope)[0] != Match.NONE
            for route in self.app.router.routes
            if getattr(route, "include_in_schema", False) is False
            and type(route).__name__ != "_IncludedRouter"  # holds documented routes
        )

    def check(self, response: httpx.Response) -> None:
        response.read()
        request = response.request
        if self.outside_document(request) or self.undeclared_expected:
            return
        answer = ContractResponse(response)
        if request.method == "HEAD":
            assert response.content == b"", f"HEAD {request.url.path} sent a body"
            headers = V31ResponseHeadersValidator(self.openapi.spec)
            headers.validate(ContractRequest(request, "GET"), answer)
            return
        self.openapi.validate_response(ContractRequest(request), answer)


def check_every_response(client: httpx.Client, app: FastAPI) -> Contract:
    """Hook the contract check onto `client` (a TestClient, or any httpx client of the app)."""
    contract = Contract(app)
    hooks: dict[str, list[Any]] = client.event_hooks
    client.event_hooks = {**hooks, "response": [*hooks.get("response", []), contract.check]}
    client.contract = contract  # type: ignore[attr-defined]
    return contract


@contextmanager
def expect_undeclared(client: httpx.Client) -> Iterator[None]:
    """For a test that asks for what the document does not have (an unknown path, a method the
    path does not answer): its responses are the test's to check."""
    contract: Contract = client.contract  # type: ignore[attr-defined]
    contract.undeclared_expected = True
    try:
        yield
    finally:
        contract.undeclared_expected = False
