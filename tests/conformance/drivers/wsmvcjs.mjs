// The conformance driver of wsmvc.js, wsmvc's own JavaScript client (wsmvc/static/wsmvc.js):
//
//     CONFORMANCE_WEBSOCKET=ws      node drivers/wsmvcjs.mjs <scenario> <ws-url>
//     CONFORMANCE_WEBSOCKET=builtin node --experimental-websocket drivers/wsmvcjs.mjs ...
//
// `ws` gives it the `ws` package's WebSocket (from tests/interop/node_modules); `builtin`
// Node's own (Node 22, or Node 20 with the flag).
//
// wsmvc.js reconnects by default: a dial step without `reconnect` turns it off, so that
// every client sees a loss the same way; with `reconnect`, a quick backoff (20 ms doubling
// up to 200 ms). The NSConn and Room objects stay the same across a reconnect.

import { createRequire } from 'node:module';

import * as wsmvc from '../../../wsmvc/static/wsmvc.js';
import { DATA, Inbox, answerOf, deferred, run, strayError, viewMessage } from './common.mjs';

const QUICK_RECONNECT = { initialDelay: 20, maxDelay: 200, factor: 2, jitter: 0.5 };

function webSocketImpl() {
    const which = process.env.CONFORMANCE_WEBSOCKET;
    if (which === 'ws') {
        return createRequire(new URL('../../interop/package.json', import.meta.url))('ws').WebSocket;
    }
    if (which === 'builtin' && typeof globalThis.WebSocket === 'function') {
        return globalThis.WebSocket;
    }
    process.stderr.write(`CONFORMANCE_WEBSOCKET=${which}: want ws, or builtin on a Node that has WebSocket\n`);
    process.exit(64);
}

const WebSocketImpl = webSocketImpl();

class WsmvcClient {
    constructor() {
        this.inbox = new Inbox();
        this.conn = null;
        this.handles = new Map(); // namespace -> the NSConn the app holds
        this.lastId = ''; // the id at the dial, or at the last restore
        this.restorations = []; // onRestored infos not yet taken by a `restored` step
        this.restoredWaiters = [];
        this.closing = deferred(); // onClosed: the connection is over for good
        this.lastCode = null; // the close code of the last socket lost (onLost)
    }

    static async dial(spec) {
        const client = new WsmvcClient();
        client.conn = await wsmvc.dial(spec.url, client.#handlers(spec.answers), {
            WebSocket: WebSocketImpl,
            reconnect: spec.reconnect ? QUICK_RECONNECT : false,
            onRestored: (conn, info) => {
                client.restorations.push(info);
                client.restoredWaiters.splice(0).forEach((wake) => wake());
            },
            onLost: (conn, info) => (client.lastCode = info.code),
            onClosed: (conn, info) => client.closing.resolve(info),
            onError: (err) => strayError('onError', err),
        });
        client.lastId = client.conn.id;
        return client;
    }

    #handlers(answers) {
        const table = {};
        for (const namespace of DATA.namespaces) {
            const events = {};
            for (const event of DATA.recorded_events) {
                events[event] = (ns, msg) => {
                    this.inbox.push(viewMessage(msg));
                };
            }
            if (namespace === 'default') {
                for (const [event, spec] of Object.entries(answers)) {
                    const answer = answerOf(spec);
                    events[event] = (ns, msg) => {
                        this.inbox.push(viewMessage(msg));
                        return 'reply' in answer ? wsmvc.reply(answer.reply + msg.text) : new Error(answer.error);
                    };
                }
            }
            table[namespace] = events;
        }
        return table;
    }

    #ns(namespace) {
        return this.handles.get(namespace) ?? this.conn.namespace(namespace);
    }

    id() {
        return this.conn.id;
    }

    wasReconnected() {
        return this.conn.wasReconnected();
    }

    async connect(namespace) {
        this.handles.set(namespace, await this.conn.connect(namespace));
    }

    async disconnect(namespace) {
        await this.#ns(namespace).disconnect();
        return null;
    }

    async join(namespace, room) {
        await this.#ns(namespace).joinRoom(room);
    }

    async leave(namespace, room) {
        const joined = this.#ns(namespace).room(room);
        if (joined === undefined) {
            throw new wsmvc.EventError('bad room');
        }
        await joined.leave();
        return null;
    }

    async leaveAll(namespace) {
        await this.#ns(namespace).leaveAll();
        return null;
    }

    emit(namespace, room, event, body) {
        const nsConn = this.#ns(namespace);
        const target = room ? nsConn?.room(room) : nsConn;
        if (target === undefined) {
            return false;
        }
        return body instanceof Uint8Array ? target.emitBinary(event, body) : target.emit(event, body);
    }

    async ask(namespace, event, body, timeoutMs) {
        const options = timeoutMs === undefined ? {} : { timeout: timeoutMs };
        const nsConn = this.#ns(namespace);
        const answer =
            nsConn !== undefined
                ? await nsConn.ask(event, body, options)
                : await this.conn.ask(new wsmvc.Message({ Namespace: namespace, Event: event, Body: body }), options);
        return viewMessage(answer);
    }

    state() {
        const namespaces = [...this.conn.namespaces.keys()].sort();
        const rooms = [];
        for (const [name, nsConn] of this.conn.namespaces) {
            rooms.push(...[...nsConn.rooms.keys()].map((room) => `${name}/${room}`));
        }
        return { closed: this.conn.closed, namespaces, rooms: rooms.sort() };
    }

    /**
     * Resolves once the connection is over for good (onClosed): the close code (of the
     * last socket lost, when it gave up reconnecting), and why it gave up.
     */
    async closed() {
        const info = await this.closing.promise;
        return { code: info.code ?? this.lastCode, error: info.error?.message ?? null };
    }

    /** Resolves with the next onRestored. */
    async restored() {
        while (this.restorations.length === 0) {
            await new Promise((wake) => this.restoredWaiters.push(wake));
        }
        const info = this.restorations.shift();
        const newId = this.conn.id !== this.lastId;
        this.lastId = this.conn.id;
        const failed = info.failed.map(({ namespace, room }) =>
            room === undefined ? namespace : `${namespace}/${room}`,
        );
        return { reconnected: this.conn.wasReconnected(), new_id: newId, failed: failed.sort(), ...this.state() };
    }

    async close() {
        await this.conn.close();
        return null;
    }
}

run({
    dial: (spec) => WsmvcClient.dial(spec),
    classify(err) {
        const kinds = [
            [wsmvc.RejectError, 'reject'],
            [wsmvc.AskTimeoutError, 'timeout'],
            [wsmvc.ConnectionClosedError, 'closed'],
            [wsmvc.EventError, 'event'],
        ];
        for (const [kind, name] of kinds) {
            if (err instanceof kind) {
                return { fail: name, text: err.message };
            }
        }
        return { fail: 'unexpected', text: `${err?.name}: ${err?.message ?? err}` };
    },
});
