"""How fast this machine is right now: the same fixed work before and after the run, so that
figures from different runs (or a run on a busy machine) can be compared."""

import os
import socket
import time

from bench.loads import connect
from bench.report import Row, progress

LOOP = 10_000_000
SERIES = 5_000_000
ROUND_TRIPS = 20_000
TRIES = 3  # the fastest counts: whatever else runs can only slow a try down


def python_loop() -> float:
    """Seconds for one core to add up LOOP integers in the interpreter."""
    started, total = time.perf_counter(), 0
    for number in range(LOOP):
        total += number
    return time.perf_counter() - started


def postgres_sum(url: str) -> float:
    """Seconds for the server to sum SERIES integers, planning and round trip included."""
    connection = connect(url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SET max_parallel_workers_per_gather = 0")
            started = time.perf_counter()
            cursor.execute("SELECT sum(i) FROM generate_series(1, %s) AS i", (SERIES,))
            cursor.fetchone()
            return time.perf_counter() - started
    finally:
        connection.close()


def round_trips() -> float:
    """Seconds for ROUND_TRIPS one-byte round trips between two processes over a socket pair:
    the wake-ups and switches a request makes between wrk, the worker and PostgreSQL, which a
    loop on one core does not show."""
    here, there = socket.socketpair()
    child = os.fork()
    if child == 0:  # echo, then leave without running the parent's clean-up
        here.close()
        for _ in range(ROUND_TRIPS):
            there.sendall(there.recv(1))
        os._exit(0)
    there.close()
    started = time.perf_counter()
    for _ in range(ROUND_TRIPS):
        here.sendall(b"x")
        here.recv(1)
    seconds = time.perf_counter() - started
    os.waitpid(child, 0)
    here.close()
    return seconds


def speed(url: str, when: str) -> list[Row]:
    """Three rows: the fastest of TRIES of each, in seconds."""
    python = min(python_loop() for _ in range(TRIES))
    postgres = min(postgres_sum(url) for _ in range(TRIES))
    switches = min(round_trips() for _ in range(TRIES))
    cases = {
        f"Python, {LOOP:,} additions": python,
        f"PostgreSQL, sum of {SERIES:,}": postgres,
        f"{ROUND_TRIPS:,} round trips between two processes": switches,
    }
    return [
        progress(Row(f"machine, {when}: {case}", seconds=seconds, note=f"fastest of {TRIES}"))
        for case, seconds in cases.items()
    ]
