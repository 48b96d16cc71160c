"""Webhooks: the outbox written with each fact, its deliveries, signed sending and retries.

Depends on the models and the database only; the API, the CLI and the app's lifespan use it.
"""
