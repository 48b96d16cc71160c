"""`crew-etl webhooks test` and `crew-etl schedule pause|resume|status`: the same code as the
API, for operators at a shell."""

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console

from app.config import settings

webhooks = typer.Typer(help="Webhook receivers: send a test event.", no_args_is_help=True)
schedule = typer.Typer(help="Pause, resume or show the schedule.", no_args_is_help=True)
console = Console(highlight=False)

Reason = Annotated[str | None, typer.Option(help="Why; shown on the status page and in events")]


@webhooks.command("test")
def send_test() -> None:
    """Send a signed `ping` to each WEBHOOK_URL now and print each answer; exit 1 unless
    every receiver answered 2xx."""
    from app.notify import events, sender
    from app.notify.outbox import new_msg_id

    if not settings.WEBHOOK_URL:
        console.print("WEBHOOK_URL is not set: no receiver to test", style="red")
        raise typer.Exit(2)
    body: dict[str, object] = {
        "type": "ping",
        "timestamp": datetime.now(UTC).isoformat(),
        "data": {"message": "a test event from crew-etl"},
    }
    if settings.WEBHOOK_FORMAT == "slack":
        body = {"text": "crew-etl: a test event; webhooks reach this channel"}
    all_delivered = True
    with sender.make_client(settings.WEBHOOK_TIMEOUT_SECONDS) as client:
        for url in settings.WEBHOOK_URL:
            answer = sender.send(client, url, new_msg_id(), events.encode(body))
            shown = sender.redacted(url)
            if answer.delivered:
                console.print(f"{shown}: HTTP {answer.status} in {answer.latency_ms:.0f} ms")
            else:
                console.print(f"{shown}: {answer.error}", style="red")
            all_delivered &= answer.delivered
    if not all_delivered:
        raise typer.Exit(1)


def show(paused: bool, reason: str | None, changed_at: datetime | None) -> None:
    state = "paused" if paused else "running"
    since = f" since {changed_at:%Y-%m-%d %H:%M:%S} UTC" if changed_at else ""
    because = f" ({reason})" if reason else ""
    console.print(f"schedule: {state}{since}{because}")


@schedule.command("pause")
def pause(reason: Reason = None) -> None:
    """Hold scheduled runs on every replica until resumed; manual runs still work."""
    change(True, reason)


@schedule.command("resume")
def resume(reason: Reason = None) -> None:
    """Let scheduled runs start again at the next slot."""
    change(False, reason)


@schedule.command("status")
def status() -> None:
    """Show whether the schedule is paused."""
    from app.db import get_engine
    from app.schedule_state import read

    with get_engine().connect() as connection:
        state = read(connection)
    show(state.paused, state.reason, state.changed_at)


def change(paused: bool, reason: str | None) -> None:
    from app.db import get_engine
    from app.schedule_state import change as change_state

    state, changed = change_state(get_engine(), paused, reason)
    if not changed:
        console.print(f"already {'paused' if paused else 'running'}; nothing changed")
    show(state.paused, state.reason, state.changed_at)
