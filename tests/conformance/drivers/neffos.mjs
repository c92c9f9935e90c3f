// The conformance driver of neffos.js 0.1.34 (npm, in Node on the `ws` package):
//
//     node drivers/neffos.mjs <scenario> <ws-url>
//
// Both packages come from tests/interop/node_modules (pinned there; `npm ci --prefix
// tests/interop`). neffos.js imports `ws` itself.
//
// How a neffos.js app works, and so this adapter: it holds the NSConn a connect resolved
// with; on a reconnect (dial option `reconnect`, in ms) neffos.js dials a *new* Conn,
// reconnects the namespaces and rejoins the rooms on it, and the app meets the new NSConn
// in its `_OnNamespaceConnected` handler: the adapter takes it from there. neffos.js has no
// "restored" notification: the `restored` step waits until a new Conn has every namespace
// and room that neffos.js itself restores, those connected when the connection was lost
// (whoever connected them), as its onclose takes them.

import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';

import { DATA, Failure, Inbox, answerOf, deferred, run, viewMessage } from './common.mjs';

const interop = createRequire(new URL('../../interop/package.json', import.meta.url));
const neffos = await import(pathToFileURL(interop.resolve('neffos.js')).href);

const RECONNECT_MS = 100; // neffos.js probes the endpoint with HEAD this often, then dials

/** A value neffos.js resolved with where it means an error (leave, disconnect). */
function resolvedError(value) {
    return value instanceof Error ? { resolved_error: value.message } : null;
}

class NeffosClient {
    constructor() {
        this.inbox = new Inbox();
        this.conn = null; // the current Conn (a new one after each reconnect)
        this.handles = new Map(); // namespace -> the NSConn the app holds
        this.lostState = new Map(); // Conn -> Map(namespace -> [rooms]) when it was lost
        this.restoredFrom = null; // the Conn of the dial or of the last restore
        this.watchers = []; // conditions re-checked after every handler call
        this.closes = new Map(); // Conn -> its websocket's close {code, reason}, once closed
    }

    static async dial(spec) {
        const client = new NeffosClient();
        const options = spec.reconnect ? { reconnect: RECONNECT_MS } : {};
        let conn;
        try {
            conn = await neffos.dial(spec.url, client.#handlers(spec.answers), options);
        } catch (err) {
            // H<reason> rejects with Error(reason); a socket that failed, with its error event.
            throw err instanceof Error
                ? new Failure('reject', err.message)
                : new Failure('closed', String(err?.message ?? err));
        }
        client.#adopt(conn);
        client.restoredFrom = conn;
        return client;
    }

    #handlers(answers) {
        const table = {};
        for (const namespace of DATA.namespaces) {
            const events = {};
            for (const event of DATA.recorded_events) {
                events[event] = (nsConn, msg) => this.#record(nsConn, msg);
            }
            if (namespace === 'default') {
                for (const [event, spec] of Object.entries(answers)) {
                    const answer = answerOf(spec);
                    events[event] = (nsConn, msg) => {
                        this.#record(nsConn, msg);
                        return 'reply' in answer ? neffos.reply(answer.reply + msg.Body) : new Error(answer.error);
                    };
                }
            }
            table[namespace] = events;
        }
        return table;
    }

    // Records the call and returns nothing (neffos.js takes a returned value as an answer).
    #record(nsConn, msg) {
        if (msg.IsForced && !this.lostState.has(nsConn.conn)) {
            // The first forced event of a closing Conn comes before it forgets anything.
            this.lostState.set(nsConn.conn, this.#namespacesOf(nsConn.conn));
        }
        this.inbox.push(viewMessage(msg));
        if (msg.Event === neffos.OnNamespaceConnected) {
            if (nsConn.conn !== this.conn) {
                this.#adopt(nsConn.conn); // neffos.js reconnected on a new Conn
            }
            this.handles.set(msg.Namespace, nsConn);
        }
        this.watchers = this.watchers.filter((check) => !check());
    }

    #adopt(conn) {
        this.conn = conn;
        conn.conn.addEventListener('close', (event) => {
            this.closes.set(conn, { code: event.code, reason: event.reason });
            this.watchers = this.watchers.filter((check) => !check());
        });
    }

    #ns(namespace) {
        return this.handles.get(namespace) ?? this.conn.namespace(namespace);
    }

    id() {
        return this.conn.ID;
    }

    wasReconnected() {
        return this.conn.wasReconnected();
    }

    async connect(namespace) {
        this.handles.set(namespace, await this.conn.connect(namespace));
    }

    async disconnect(namespace) {
        return resolvedError(await this.#ns(namespace).disconnect());
    }

    async join(namespace, room) {
        await this.#ns(namespace).joinRoom(room);
    }

    async leave(namespace, room) {
        const joined = this.#ns(namespace).room(room);
        if (joined === undefined) {
            return { resolved_error: 'bad room' };
        }
        return resolvedError(await joined.leave());
    }

    async leaveAll(namespace) {
        return resolvedError(await this.#ns(namespace).leaveAll());
    }

    emit(namespace, room, event, body) {
        const nsConn = this.#ns(namespace);
        if (nsConn === undefined) {
            return false;
        }
        const binary = body instanceof Uint8Array;
        if (room) {
            const joined = nsConn.room(room);
            if (joined === undefined) {
                return false;
            }
            if (!binary) {
                return joined.emit(event, body);
            }
            return nsConn.conn.write(this.#message(namespace, room, event, body));
        }
        return binary ? nsConn.emitBinary(event, body) : nsConn.emit(event, body);
    }

    // neffos.js asks have no timeout: `timeoutMs` is not used (the driver has a deadline).
    async ask(namespace, event, body, timeoutMs) {
        const conn = this.#ns(namespace)?.conn ?? this.conn;
        return viewMessage(await conn.ask(this.#message(namespace, '', event, body)));
    }

    #message(namespace, room, event, body) {
        const msg = new neffos.Message();
        msg.Namespace = namespace;
        msg.Room = room;
        msg.Event = event;
        msg.Body = body;
        msg.SetBinary = body instanceof Uint8Array;
        return msg;
    }

    #namespacesOf(conn) {
        return new Map([...conn.connectedNamespaces].map(([name, nsConn]) => [name, [...nsConn.rooms.keys()]]));
    }

    state() {
        const namespaces = [...this.conn.connectedNamespaces.keys()].sort();
        const rooms = [];
        for (const [name, nsConn] of this.conn.connectedNamespaces) {
            rooms.push(...[...nsConn.rooms.keys()].map((room) => `${name}/${room}`));
        }
        return { closed: this.conn.isClosed(), namespaces, rooms: rooms.sort() };
    }

    /** Resolves with the close of the current Conn's websocket. */
    closed() {
        const conn = this.conn;
        const done = deferred();
        const check = () => {
            const close = this.closes.get(conn);
            if (close !== undefined) {
                done.resolve({ code: close.code, error: null }); // neffos.js never says why it stopped
            }
            return close !== undefined;
        };
        if (!check()) {
            this.watchers.push(check);
        }
        return done.promise;
    }

    /** Resolves once a new Conn has every namespace and room the lost one had. */
    restored() {
        const from = this.restoredFrom;
        const done = deferred();
        const check = () => {
            const conn = this.conn;
            const lost = this.lostState.get(from);
            if (conn === from || conn.isClosed() || lost === undefined) {
                return false;
            }
            for (const [namespace, rooms] of lost) {
                const nsConn = conn.namespace(namespace);
                if (nsConn === undefined || rooms.some((room) => !nsConn.rooms.has(room))) {
                    return false;
                }
            }
            this.restoredFrom = conn;
            done.resolve({ reconnected: conn.wasReconnected(), new_id: conn.ID !== from.ID, ...this.state() });
            return true;
        };
        if (!check()) {
            this.watchers.push(check);
        }
        return done.promise;
    }

    async close() {
        const conn = this.conn;
        conn.close();
        if (conn.conn.readyState !== conn.conn.CLOSED) {
            await this.closed();
        }
        return null;
    }
}

run({
    dial: (spec) => NeffosClient.dial(spec),
    classify(err) {
        if (err === neffos.ErrClosed || err?.message === neffos.ErrClosed.message) {
            return { fail: 'closed', text: err.message };
        }
        return { fail: 'event', text: err instanceof Error ? err.message : String(err) };
    },
});
