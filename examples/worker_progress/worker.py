"""Progress from a worker to one user's browser tabs: the worker.

    python examples/worker_progress/worker.py --broker redis://127.0.0.1:6379/0 --user alice

A plain ``asyncio.run`` script, no web server: it does a job in ``--steps`` steps and, after
each, sends ``Progress`` (``{"job", "step", "of"}`` as JSON) to every tab of ``--user``
through the servers' broker (``wsmvc.emitter.Emitter``), then ``Done``. Before starting it
asks one of the user's tabs ``Seen?`` and prints the answer, to show that a worker can ask
too (the tab's server forwards the question and the answer).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid

from app import NAMESPACE, exchange_for

from wsmvc import Message
from wsmvc.emitter import Emitter


def event(name: str, body: dict[str, object]) -> Message:
    return Message(namespace=NAMESPACE, event=name, body=json.dumps(body).encode())


async def run(broker: str, user: str, steps: int, delay: float) -> None:
    job = uuid.uuid4().hex[:8]
    async with Emitter(exchange_for(broker)) as emitter:
        reply = await emitter.ask(event("Seen?", {"job": job}), to=user, timeout=5)
        print(f"{user} answered: {reply.text}", flush=True)
        for step in range(1, steps + 1):
            await asyncio.sleep(delay)  # the work of one step
            await emitter.broadcast(
                event("Progress", {"job": job, "step": step, "of": steps}), to=user
            )
        await emitter.broadcast(event("Done", {"job": job}), to=user)
    print(f"job {job}: {steps} steps sent to {user}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", required=True, help="the servers' redis:// or nats:// URL")
    parser.add_argument("--user", required=True, help="whose tabs get the progress")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--delay", type=float, default=0.5, help="seconds per step")
    args = parser.parse_args()
    asyncio.run(run(args.broker, args.user, args.steps, args.delay))


if __name__ == "__main__":
    main()
