// Connection state recovery (docs/recovery.md): a page whose TCP connection dies (the
// server aborts it: no close frame) comes back to a server with recovery (/rws) and gets
// the same connection back, nothing lost either way; against a server without recovery
// (/ws), past the server's window (/rws-short), past its own window, or refused, it gets a
// new connection and restores its namespaces and rooms as before.
//
// The server "drops" a connection with POST /drop (its transport aborted); POST /stream
// broadcasts numbered messages and drops the connection in the middle; GET /gone waits for
// a connection's disconnect events on the server.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
    Inbox,
    QUICK_RECONNECT,
    WS_BASE,
    api,
    lifecycle,
    members,
    newTag,
    options,
    within,
    wsmvc,
} from './support.mjs';

const FORCED = [wsmvc.OnRoomLeft, wsmvc.OnNamespaceDisconnect];
const hold = (tag, how = '503') => api(`/hold?client=${tag}&how=${how}`, 'POST');
const release = (tag) => api(`/release?client=${tag}`, 'POST');
const drop = (conn, reset = false) => api(`/drop?id=${conn.id}&reset=${reset ? 1 : 0}`, 'POST');
const url = (path, tag) => `${WS_BASE}${path}?client=${tag}`;
const numbers = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => String(from + i));

for (const reset of [false, true]) {
    test(`back within the window, nothing is lost either way (${reset ? 'a reset' : 'aborted'})`, async () => {
        const tag = newTag();
        const inbox = new Inbox();
        const got = [];
        let atLoss = -1; // how many n the page had when it noticed the loss
        const conn = await wsmvc.dial(
            url('/rws', tag),
            {
                default: {
                    ...inbox.handlers(...FORCED),
                    // Each message answered with a numbered note: both ways busy at the loss.
                    n: (ns, msg) => {
                        got.push(msg.Body);
                        ns.emit('note', String(got.length));
                        if (got.length === 1000) {
                            inbox.put('all', got);
                        }
                    },
                },
            },
            options({
                reconnect: QUICK_RECONNECT,
                onLost: (c, info) => {
                    atLoss = got.length;
                    for (const q of ['q1', 'q2', 'q3']) {
                        assert.equal(c.namespace('default').emit('note', q), true); // queued
                    }
                    inbox.put('lost', info);
                },
                onRestored: (c, info) => inbox.put('restored', info),
            }),
        );
        const ns = await conn.connect('default');
        const room = `r-${tag}`;
        await ns.joinRoom(room);
        const firstId = conn.id;
        const started = performance.now();
        const streamed = api(`/stream?id=${conn.id}&room=${room}&count=1000&drop=310&reset=${reset ? 1 : 0}`, 'POST');

        assert.deepEqual(await inbox.next('lost'), { code: 1006, reason: '', reconnecting: true });
        const restored = await inbox.next('restored');
        assert.deepEqual(restored, { failed: [], recovered: true, previousId: firstId, attempts: 1 });
        await within(streamed, 'the stream');
        assert.deepEqual(await inbox.next('all'), numbers(1, 1000));
        const elapsed = performance.now() - started;
        assert.equal((await ns.ask('ask', 'after')).Body, 'pong:after'); // the notes were handled before

        // Each note once, in order; the ones queued while away right after what the
        // server missed of the ones before the loss.
        const notes = await api(`/notes?client=${tag}`);
        assert.deepEqual(notes, [...numbers(1, atLoss), 'q1', 'q2', 'q3', ...numbers(atLoss + 1, 1000)]);
        assert.equal(conn.id, firstId);
        assert.equal(conn.state, 'open');
        for (const event of FORCED) {
            assert.equal(inbox.pending(event), 0, `${event} fired`);
        }
        assert.deepEqual(await members('default', room), [firstId]);
        assert.equal(await api(`/gone?id=${firstId}&wait=0`), false, 'the server ran no disconnect event');
        const how = reset ? 'reset' : 'abort';
        console.log(`# 1000 messages across a dropped connection (${how}): ${elapsed.toFixed(0)} ms`);
        await conn.close();
    });
}

test('an ask in flight at the loss is answered after it, and an ask made meanwhile too', async () => {
    const tag = newTag();
    const inbox = new Inbox();
    const conn = await wsmvc.dial(
        url('/rws', tag),
        { default: inbox.handlers(...FORCED) },
        options({ reconnect: QUICK_RECONNECT, ...lifecycle(inbox) }),
    );
    const ns = await conn.connect('default');
    const slow = ns.ask('slow', 'in flight');
    await hold(tag);
    await drop(conn);
    await inbox.next('lost');
    const queued = ns.ask('ask', 'queued');
    await api(`/unblock?client=${tag}`, 'POST'); // the answer is written while the page is away
    await release(tag);
    assert.equal((await inbox.next('restored')).recovered, true);
    assert.equal((await within(slow, 'the ask in flight')).Body, 'slow:in flight');
    assert.equal((await within(queued, 'the queued ask')).Body, 'pong:queued');
    assert.equal(inbox.pending(wsmvc.OnNamespaceDisconnect), 0);
    await conn.close();
});

test('a server without recovery: a new connection, the forced events, the rooms restored', async () => {
    const tag = newTag();
    const inbox = new Inbox();
    const conn = await wsmvc.dial(
        url('/ws', tag),
        { default: inbox.handlers(...FORCED, wsmvc.OnRoomJoined) },
        options({ reconnect: QUICK_RECONNECT, ...lifecycle(inbox) }),
    );
    const ns = await conn.connect('default');
    await ns.joinRoom('plain');
    await inbox.next(wsmvc.OnRoomJoined);
    const firstId = conn.id;
    await drop(conn);
    assert.deepEqual(await inbox.next('lost'), { code: 1006, reason: '', reconnecting: true });
    assert.equal((await inbox.next(wsmvc.OnRoomLeft)).IsForced, true);
    assert.equal((await inbox.next(wsmvc.OnNamespaceDisconnect)).IsForced, true);
    const restored = await inbox.next('restored');
    assert.equal(restored.recovered, false);
    assert.notEqual(conn.id, firstId);
    assert.equal((await inbox.next(wsmvc.OnRoomJoined)).Room, 'plain');
    assert.ok((await members('default', 'plain')).includes(conn.id));
    await conn.close();
});

test("past the server's window: the kept connection ends when the server says so, then a restore", async () => {
    const tag = newTag();
    const inbox = new Inbox();
    const conn = await wsmvc.dial(
        url('/rws-short', tag),
        { default: inbox.handlers(...FORCED, wsmvc.OnRoomJoined) },
        options({ reconnect: QUICK_RECONNECT, ...lifecycle(inbox) }),
    );
    const ns = await conn.connect('default');
    const room = `w-${tag}`;
    await ns.joinRoom(room);
    await inbox.next(wsmvc.OnRoomJoined);
    const firstId = conn.id;
    const silent = ns.ask('silent', '', { timeout: 60_000 });
    await hold(tag);
    await drop(conn);
    await inbox.next('lost');
    assert.equal(ns.emit('note', 'while away'), true);
    assert.equal(await api(`/gone?id=${firstId}`), true); // the server gave it up
    assert.equal(inbox.pending(wsmvc.OnNamespaceDisconnect), 0, 'still kept by the page');
    await release(tag);
    assert.equal((await inbox.next(wsmvc.OnRoomLeft)).IsForced, true);
    assert.equal((await inbox.next(wsmvc.OnNamespaceDisconnect)).IsForced, true);
    await assert.rejects(within(silent, 'the ask to fail'), { name: 'ConnectionClosedError' });
    const restored = await inbox.next('restored');
    assert.equal(restored.recovered, false);
    assert.notEqual(conn.id, firstId);
    assert.deepEqual(await members('default', room), [conn.id]);
    assert.equal((await ns.ask('ask', 'x')).Body, 'pong:x');
    assert.deepEqual(await api(`/notes?client=${tag}`), ['while away']);
    await conn.close();
});

test('past its own window the page gives the kept connection up: forced events, then a new one', async () => {
    const tag = newTag();
    const inbox = new Inbox();
    const conn = await wsmvc.dial(
        url('/rws', tag),
        { default: inbox.handlers(...FORCED) },
        options({ reconnect: QUICK_RECONNECT, recovery: { window: 200 }, ...lifecycle(inbox) }),
    );
    const ns = await conn.connect('default');
    const firstId = conn.id;
    await hold(tag);
    try {
        await drop(conn);
        await inbox.next('lost');
        assert.equal((await inbox.next(wsmvc.OnNamespaceDisconnect)).IsForced, true);
    } finally {
        await release(tag);
    }
    const restored = await inbox.next('restored');
    assert.equal(restored.recovered, false);
    assert.notEqual(conn.id, firstId);
    assert.equal((await ns.ask('ask', 'x')).Body, 'pong:x');
    await conn.close();
});

test('a server refusing the return ends the kept connection: forced events, onClosed', async () => {
    const tag = newTag();
    const inbox = new Inbox();
    const conn = await wsmvc.dial(
        url('/rws-short', tag),
        { default: inbox.handlers(...FORCED) },
        options({ reconnect: QUICK_RECONNECT, ...lifecycle(inbox) }),
    );
    const ns = await conn.connect('default');
    const firstId = conn.id;
    await hold(tag);
    try {
        await drop(conn);
        await inbox.next('lost');
        const queued = ns.ask('ask', 'never');
        assert.equal(await api(`/gone?id=${firstId}`), true);
        await hold(tag, 'reject');
        const closed = await inbox.next('closed');
        assert.equal(closed.error.name, 'RejectError');
        assert.equal((await inbox.next(wsmvc.OnNamespaceDisconnect)).IsForced, true);
        await assert.rejects(queued, { name: 'RejectError', message: 'held' });
        assert.equal(conn.state, 'closed');
    } finally {
        await release(tag);
    }
});

test('recovery: false never asks for it', async () => {
    const tag = newTag();
    const conn = await wsmvc.dial(url('/rws', tag), { default: {} }, options({ recovery: false }));
    assert.equal(await api(`/recoverable?id=${conn.id}`), false);
    const asking = await wsmvc.dial(url('/rws', tag), { default: {} }, options());
    assert.equal(await api(`/recoverable?id=${asking.id}`), true);
    const never = await wsmvc.dial(url('/rws', tag), { default: {} }, options({ reconnect: false }));
    assert.equal(await api(`/recoverable?id=${never.id}`), false, 'a connection that never reconnects');
    await Promise.all([conn.close(), asking.close(), never.close()]);
});

test('the recovery option is checked', async () => {
    for (const recovery of [{ window: 0 }, { maxMessages: 1.5 }, { maxBytes: -1 }]) {
        await assert.rejects(wsmvc.dial(url('/rws', 'x'), {}, options({ recovery })), {
            name: 'TypeError',
            message: /invalid recovery option/,
        });
    }
});
