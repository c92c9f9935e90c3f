// Helpers of the Node tests of wsmvc.js (tests/jsclient/*.test.mjs), run by
// `node --test` against tests/jsclient/app.py, whose address is in WSMVC_TEST_URL
// (test_node.py starts the app and sets it).
//
// Nothing sleeps: every wait is on an event, a callback or a promise, with a deadline.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';

import * as wsmvc from '../../wsmvc/static/wsmvc.js';

export { wsmvc };

/** The app: http://127.0.0.1:<port>. */
export const BASE = process.env.WSMVC_TEST_URL ?? '';
if (!BASE) {
    throw new Error('WSMVC_TEST_URL is not set: run these through tests/jsclient/test_node.py');
}
export const WS_BASE = BASE.replace(/^http/, 'ws');
export const WAIT_MS = 5000; // one answer or pushed event

/**
 * The WebSocket the tests use: Node's own (Node 22, or 20 with --experimental-websocket),
 * else (or with WSMVC_TEST_WEBSOCKET=ws) the ws package; `usesBuiltin` says which.
 */
export const usesBuiltin = typeof globalThis.WebSocket === 'function' && process.env.WSMVC_TEST_WEBSOCKET !== 'ws';
export const WebSocketImpl = usesBuiltin ? globalThis.WebSocket : (await import('ws')).WebSocket;

/** Dial options: `extra`, plus the ws package when Node has no WebSocket of its own. */
export function options(extra = {}) {
    return usesBuiltin ? { ...extra } : { WebSocket: WebSocketImpl, ...extra };
}

/** A tag unique to one test (the app keys holds and notes by it: ?client=<tag>). */
export function newTag() {
    return randomUUID().slice(0, 8);
}

/** The /ws endpoint, with ?client=<tag> when given. */
export function endpoint(tag) {
    return tag ? `${WS_BASE}/ws?client=${tag}` : `${WS_BASE}/ws`;
}

/** Resolve with `promise`, or reject when it takes longer than `ms`. */
export function within(promise, what, ms = WAIT_MS) {
    let timer;
    const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    });
    return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Call the app's HTTP API; resolves with its JSON answer. */
export async function api(path, method = 'GET') {
    const response = await fetch(BASE + path, { method });
    if (!response.ok) {
        throw new Error(`${method} ${path}: ${response.status}`);
    }
    return response.json();
}

/** The ids the server has in `room` of `namespace` (server.room_members). */
export function members(namespace, room) {
    return api(`/members?namespace=${encodeURIComponent(namespace)}&room=${encodeURIComponent(room)}`);
}

/**
 * What the handlers of a connection received, by event, to await in order:
 * `inbox.handlers('chat')` makes the handlers, `await inbox.next('chat')` takes the next.
 */
export class Inbox {
    #queues = new Map();
    #waiters = new Map();

    /** Recording handlers for `events`. */
    handlers(...events) {
        return Object.fromEntries(events.map((event) => [event, (ns, msg) => this.put(event, msg)]));
    }

    put(event, value) {
        const waiters = this.#waiters.get(event) ?? [];
        if (waiters.length > 0) {
            waiters.shift()(value);
            return;
        }
        const queue = this.#queues.get(event) ?? [];
        queue.push(value);
        this.#queues.set(event, queue);
    }

    /** The next value recorded for `event` (waiting for it at most `ms`). */
    next(event, ms = WAIT_MS) {
        const queue = this.#queues.get(event) ?? [];
        if (queue.length > 0) {
            return Promise.resolve(queue.shift());
        }
        const arrived = new Promise((resolve) => {
            const waiters = this.#waiters.get(event) ?? [];
            waiters.push(resolve);
            this.#waiters.set(event, waiters);
        });
        return within(arrived, `no ${event} event`, ms);
    }

    /** How many values of `event` wait to be taken. */
    pending(event) {
        return (this.#queues.get(event) ?? []).length;
    }
}

/**
 * A WebSocket class that records every frame its sockets send and receive, in order, into
 * `log` (entries ['out' | 'in', data as text (bytes as latin-1), whether binary]), and
 * keeps its sockets in `log.sockets`.
 */
export function recordingWebSocket(log, Base = WebSocketImpl) {
    log.sockets = [];
    const text = (data) => (typeof data === 'string' ? data : Buffer.from(data.buffer ?? data).toString('latin1'));
    return class RecordingWebSocket extends Base {
        constructor(...args) {
            super(...args);
            log.sockets.push(this);
            this.addEventListener('message', (event) =>
                log.push(['in', text(event.data), typeof event.data !== 'string']),
            );
        }

        send(data) {
            log.push(['out', text(data), typeof data !== 'string']);
            super.send(data);
        }
    };
}

/** The tokens of the requests in a frame log (`$` tokens of 'out' frames). */
export function requestTokens(log) {
    return log.filter(([dir, frame]) => dir === 'out' && frame.startsWith('$')).map(([, frame]) => frame.split(';')[0]);
}

/**
 * Callbacks for dial's onLost/onRestored/onClosed that record into an Inbox
 * (events 'lost', 'restored', 'closed'; the value is the info object).
 */
export function lifecycle(inbox) {
    return {
        onLost: (conn, info) => inbox.put('lost', info),
        onRestored: (conn, info) => inbox.put('restored', info),
        onClosed: (conn, info) => inbox.put('closed', info),
    };
}

/** Fast reconnects for tests: 20 ms, then doubling up to 200 ms. */
export const QUICK_RECONNECT = { initialDelay: 20, maxDelay: 200, factor: 2, jitter: 0.5 };

/** Every request of `kind` in the frame log is sent only after the previous one was answered. */
export function assertOneAtATime(log, kind) {
    let waiting = null;
    for (const [dir, frame] of log) {
        const token = frame.split(';')[0];
        if (dir === 'out' && frame.includes(kind)) {
            assert.equal(waiting, null, `${frame} was sent before ${waiting} was answered`);
            waiting = token;
        } else if (dir === 'in' && token === waiting) {
            waiting = null;
        }
    }
}
