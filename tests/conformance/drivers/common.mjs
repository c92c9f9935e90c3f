// The step interpreter the Node drivers share (neffos.mjs, wsmvcjs.mjs): it reads one
// scenario of ../scenarios.json, performs its steps in order through a client adapter and
// prints one JSON line per step, `{"step": <index>, "observed": {...}}`, then `{"end": true}`.
//
// A step that needs the test harness (`{"do": "harness"}`: stop or start the server) prints
// `{"step": <index>, "harness": <action>}` and waits for a line on stdin: the harness's
// outcome, as an observation (`{"ok": null}`, or `{"fail": "slow", ...}` past the step's
// `within_ms`), which it reports as the step's.
//
// An observation is `{"ok": <value>}`, `{"fail": <kind>, "text": <error text>}` (kind:
// "event" for an error answer or refusal, "timeout" for the client's own ask timeout,
// "closed" for a closed connection, "reject" for a handshake the server refused),
// `{"pending": true}` for an action the client did not settle within the driver's
// deadline, `{"timeout": ...}` for an awaited event that did not come, and `{"crash": ...}`
// for a driver bug. The driver never judges: tests/conformance/test_conformance.py compares.
//
// The end line also lists the stray errors of the run (`{"end": true, "stray": [...]}`):
// promise rejections nobody handled, exceptions nobody caught, and what an adapter reports
// (wsmvc.js' onError). In an app each is a crash or a lost error.
//
// Nothing sleeps: every wait is on a promise or an event, with a deadline.

import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';

export const DATA = JSON.parse(readFileSync(new URL('../scenarios.json', import.meta.url), 'utf8'));
export const WAIT_MS = 5000; // one awaited event, one request (a request's own timeout aside)
const HARNESS_MS = 60000; // the harness stopping or starting the server
const RESTORE_MS = 20000; // a reconnect, server restart included

function report(record) {
    process.stdout.write(JSON.stringify(record) + '\n');
}

class Deadline extends Error {}

/** An error an adapter throws to say its kind itself (see the observations above). */
export class Failure extends Error {
    constructor(kind, text) {
        super(text);
        this.kind = kind;
    }
}

/** `promise`, or a rejection with Deadline once `ms` passed. */
export function within(promise, ms, what) {
    let timer;
    const deadline = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Deadline(`${what}: nothing within ${ms} ms`)), ms);
    });
    Promise.resolve(promise).catch(() => {}); // one that settles past its deadline is nobody's
    return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

/** A resolvable promise. */
export function deferred() {
    let resolve;
    const promise = new Promise((yes) => (resolve = yes));
    return { promise, resolve };
}

/** A body of a step as the clients take it: a string, or a Uint8Array for {"bytes": [...]}. */
export function bodyOf(spec) {
    if (spec !== null && typeof spec === 'object') {
        return Uint8Array.from(spec.bytes);
    }
    return spec ?? '';
}

/** A received body as JSON: a string (text frame), or {"bytes": [...]} (an ArrayBuffer). */
export function viewBody(body) {
    if (body instanceof ArrayBuffer) {
        return { bytes: Array.from(new Uint8Array(body)) };
    }
    if (ArrayBuffer.isView(body)) {
        return { bytes: Array.from(new Uint8Array(body.buffer, body.byteOffset, body.byteLength)) };
    }
    return body ?? '';
}

/** What a handler got, or an ask resolved with: the fields the scenarios look at. */
export function viewMessage(msg) {
    return {
        event: msg.Event,
        ns: msg.Namespace ?? '',
        room: msg.Room || '',
        body: viewBody(msg.Body),
        binary: Boolean(msg.SetBinary),
        forced: Boolean(msg.IsForced),
        local: Boolean(msg.IsLocal),
    };
}

/** The handler calls of one connection, by event, in arrival order. */
export class Inbox {
    #items = [];
    #waiters = [];

    push(view) {
        this.#items.push(view);
        for (const wake of this.#waiters.splice(0)) {
            wake();
        }
    }

    /** The next not yet taken call of `event` (waits up to `ms`). */
    next(event, ms = WAIT_MS) {
        const found = new Promise((resolve) => {
            const look = () => {
                const i = this.#items.findIndex((item) => item.event === event);
                if (i >= 0) {
                    resolve(this.#items.splice(i, 1)[0]);
                } else {
                    this.#waiters.push(look);
                }
            };
            look();
        });
        return within(found, ms, `event ${event}`);
    }

    /** The calls of `event` not yet taken, taken now (no wait). */
    pending(event) {
        const taken = this.#items.filter((item) => item.event === event);
        this.#items = this.#items.filter((item) => item.event !== event);
        return taken;
    }
}

/** The handler spec of a dial step's `answers`: what a handler returns, or null to record only. */
export function answerOf(spec) {
    if (spec === undefined) {
        return null;
    }
    if ('reply' in spec) {
        return { reply: spec.reply };
    }
    return { error: spec.error };
}

const stray = [];

/** Note an error that reached no caller (reported at the end of the run). */
export function strayError(what, err) {
    stray.push(`${what}: ${err instanceof Error ? err.message : String(err)}`);
}

process.on('unhandledRejection', (reason) => strayError('unhandled rejection', reason));
process.on('uncaughtException', (err) => strayError('uncaught exception', err));

let stdinLines = null;

/** Ask the test harness to do `action`; its outcome (a line on stdin) is the observation. */
async function harness(index, action) {
    stdinLines ??= createInterface({ input: process.stdin })[Symbol.asyncIterator]();
    report({ step: index, harness: action });
    const { value, done } = await within(stdinLines.next(), HARNESS_MS, `harness ${action}`);
    if (done) {
        throw new Error(`stdin closed while waiting for the harness to ${action}`);
    }
    return JSON.parse(value);
}

/**
 * Run the scenario named in argv with `adapter`: `{dial(spec) -> client, classify(err)}`;
 * a client has the methods the steps call (see the adapters).
 */
export async function run(adapter) {
    const [name, url] = process.argv.slice(2);
    const scenario = DATA.scenarios.find((s) => s.name === name);
    if (scenario === undefined || url === undefined) {
        process.stderr.write(`usage: node <driver> <scenario> <ws-url>\n`);
        process.exit(64);
    }
    const conns = new Map();
    const started = new Map(); // ask_begin id -> the ask's promise
    const client = (step) => {
        const found = conns.get(step.conn);
        if (found === undefined) {
            throw new Error(`step uses conn ${step.conn} before dialing it`);
        }
        return found;
    };
    // Settle an action: {ok: value}, {fail, text}, or {pending: true} past the deadline.
    const settle = async (action, ms = WAIT_MS) => {
        try {
            return { ok: await within(Promise.resolve().then(action), ms, 'action') };
        } catch (err) {
            if (err instanceof Deadline) {
                return { pending: true };
            }
            if (err instanceof Failure) {
                return { fail: err.kind, text: err.message };
            }
            return adapter.classify(err);
        }
    };
    const steps = {
        dial: (step) =>
            settle(async () => {
                const conn = await adapter.dial({
                    url: withQuery(url, step.query),
                    reconnect: Boolean(step.reconnect),
                    answers: step.answers ?? {},
                });
                conns.set(step.conn, conn);
                return { id: conn.id(), reconnected: conn.wasReconnected() };
            }),
        connect: (step) =>
            settle(() =>
                client(step)
                    .connect(step.ns)
                    .then(() => null),
            ),
        disconnect: (step) => settle(() => client(step).disconnect(step.ns ?? 'default')),
        join: (step) =>
            settle(() =>
                client(step)
                    .join(step.ns ?? 'default', step.room)
                    .then(() => null),
            ),
        leave: (step) => settle(() => client(step).leave(step.ns ?? 'default', step.room)),
        leave_all: (step) => settle(() => client(step).leaveAll(step.ns ?? 'default')),
        emit: (step) =>
            settle(() => client(step).emit(step.ns ?? 'default', step.room ?? '', step.event, bodyOf(step.body))),
        ask: (step) =>
            settle(
                () => client(step).ask(step.ns ?? 'default', step.event, bodyOf(step.body), step.timeout_ms),
                (step.timeout_ms ?? WAIT_MS) + 1000,
            ),
        ask_begin: async (step) => {
            const asking = Promise.resolve().then(() =>
                client(step).ask(step.ns ?? 'default', step.event, bodyOf(step.body), step.timeout_ms),
            );
            asking.catch(() => {}); // settled at its ask_end
            started.set(step.id, asking);
            return { ok: null };
        },
        ask_end: (step) => settle(() => started.get(step.id), step.wait_ms ?? WAIT_MS + 1000),
        ask_all: (step) =>
            settle(() =>
                Promise.all(step.bodies.map((body) => client(step).ask(step.ns ?? 'default', step.event, body))),
            ),
        sync: (step) => settle(() => client(step).ask('default', 'sync', '')),
        next_event: async (step) => {
            try {
                return { ok: await client(step).inbox.next(step.event) };
            } catch (err) {
                return { timeout: err.message };
            }
        },
        pending_events: async (step) => ({ ok: client(step).inbox.pending(step.event) }),
        state: async (step) => ({ ok: client(step).state() }),
        closed: (step) => settle(() => client(step).closed()),
        restored: (step) => settle(() => client(step).restored(), step.wait_ms ?? RESTORE_MS),
        close: (step) => settle(() => client(step).close()),
        ids_distinct: async (step) => {
            const ids = step.conns.map((name) => conns.get(name).id());
            return { ok: new Set(ids).size === ids.length };
        },
        harness: (step, index) => harness(index, step.action),
    };
    for (const [index, step] of scenario.steps.entries()) {
        let observed;
        try {
            observed = await steps[step.do](step, index);
        } catch (err) {
            observed = { crash: String(err?.stack ?? err) };
        }
        report({ step: index, observed });
    }
    await Promise.allSettled([...conns.values()].map((conn) => within(conn.close(), WAIT_MS, 'close')));
    report({ end: true, stray });
    process.exit(0);
}

function withQuery(url, query) {
    if (query === undefined) {
        return url;
    }
    const parsed = new URL(url);
    for (const [key, value] of Object.entries(query)) {
        parsed.searchParams.set(key, value);
    }
    return parsed.href;
}
