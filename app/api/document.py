"""The OpenAPI document as FastAPI builds it, with the examples' nulls put back: FastAPI's
encoder leaves every null out of the document, so an example of a required nullable field would
no longer fit its own schema (and a generated client's `from_dict` would fail on it)."""

from collections.abc import Callable, Iterable
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel


def examples_of(model: type[BaseModel]) -> list[Any] | None:
    extra = model.model_config.get("json_schema_extra")
    return extra.get("examples") if isinstance(extra, dict) else None  # type: ignore[return-value]


def keep_null_examples(app: FastAPI, models: Iterable[type[BaseModel]]) -> None:
    """Have `app.openapi()` carry each model's schema examples exactly as written."""
    build: Callable[[], dict[str, Any]] = app.openapi
    models = tuple(models)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schemas = build()["components"]["schemas"]
            for model in models:
                examples = examples_of(model)
                if examples and model.__name__ in schemas:
                    schemas[model.__name__]["examples"] = examples
        return build()  # built once, then kept by FastAPI

    app.openapi = openapi  # type: ignore[method-assign]
