// Losing the connection and getting it back: the callbacks, the forced events, the restore
// of namespaces and rooms (one request at a time, in order), the queue of what the app
// sends meanwhile, giving up, and tokens that stay unique.
//
// The server "drops" a client with POST /kick (it closes the connection, code 4000), and
// plays "down" for one test's client with POST /hold?client=<tag> (its upgrades get 503,
// or with how=reject the handshake refuses it) until POST /release.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
    Inbox,
    QUICK_RECONNECT,
    api,
    assertOneAtATime,
    endpoint,
    lifecycle,
    members,
    newTag,
    options,
    recordingWebSocket,
    requestTokens,
    within,
    wsmvc,
} from './support.mjs';

const ROOM_EVENTS = [wsmvc.OnRoomJoin, wsmvc.OnRoomJoined, wsmvc.OnRoomLeave, wsmvc.OnRoomLeft];
const NS_EVENTS = [wsmvc.OnNamespaceConnected, wsmvc.OnNamespaceDisconnect];

const kick = (conn) => api(`/kick?id=${conn.id}`, 'POST');
const hold = (tag, how = '503') => api(`/hold?client=${tag}&how=${how}`, 'POST');
const release = (tag) => api(`/release?client=${tag}`, 'POST');

/** The forced local events of a lost connection, as [event, room] pairs, from `inbox`. */
async function forcedEvents(inbox, rooms) {
    const seen = [];
    for (const room of rooms) {
        for (const event of [wsmvc.OnRoomLeave, wsmvc.OnRoomLeft]) {
            const msg = await inbox.next(event);
            assert.equal(msg.IsForced, true);
            seen.push([event, msg.Room]);
        }
    }
    const gone = await inbox.next(wsmvc.OnNamespaceDisconnect);
    assert.deepEqual([gone.IsForced, gone.IsLocal], [true, true]);
    seen.push([wsmvc.OnNamespaceDisconnect, gone.Namespace]);
    return seen;
}

test('without reconnect: a server close calls onLost and onClosed, fails the asks, fires forced events', async () => {
    const inbox = new Inbox();
    const conn = await wsmvc.dial(
        endpoint(),
        { default: inbox.handlers(...ROOM_EVENTS, ...NS_EVENTS) },
        options({ reconnect: false, ...lifecycle(inbox) }),
    );
    const ns = await conn.connect('default');
    await ns.joinRoom('porch');
    const waiting = ns.ask('silent', '', { timeout: 60_000 });
    await kick(conn);

    assert.deepEqual(await inbox.next('lost'), { code: 4000, reason: 'kicked', reconnecting: false });
    await assert.rejects(within(waiting, 'the ask to fail', 1000), (err) => {
        assert.equal(err.name, 'ConnectionClosedError');
        assert.equal(err.message, 'the connection was lost (code 4000: kicked)');
        assert.deepEqual([err.code, err.reason], [4000, 'kicked']);
        return true;
    });
    await inbox.next(wsmvc.OnNamespaceConnected);
    await inbox.next(wsmvc.OnRoomJoin);
    await inbox.next(wsmvc.OnRoomJoined);
    assert.deepEqual(await forcedEvents(inbox, ['porch']), [
        [wsmvc.OnRoomLeave, 'porch'],
        [wsmvc.OnRoomLeft, 'porch'],
        [wsmvc.OnNamespaceDisconnect, 'default'],
    ]);
    assert.deepEqual(await inbox.next('closed'), { code: 4000, reason: 'kicked', byClient: false });
    assert.equal(conn.isClosed(), true);
    assert.equal(ns.emit('echo', 'x'), false);
    await within(conn.close(), 'close after the loss');
});

test('reconnect restores the namespaces and rooms, one request at a time, in order', async () => {
    const inbox = new Inbox();
    const log = [];
    const seen = []; // every event of namespace default, in order
    const record = (ns, msg) => seen.push([msg.Event, msg.Room, msg.IsForced]);
    const conn = await wsmvc.dial(
        endpoint(newTag()),
        { default: Object.fromEntries([...ROOM_EVENTS, ...NS_EVENTS].map((event) => [event, record])), other: {} },
        {
            ...options(),
            WebSocket: recordingWebSocket(log),
            headers: { 'X-Name': 'ann' },
            reconnect: QUICK_RECONNECT,
            ...lifecycle(inbox),
        },
    );
    const ns = await conn.connect('default');
    const other = await conn.connect('other');
    const rooms = ['r-b', 'r-a', 'r-c'].map((name) => `${name}-${conn.id.slice(0, 8)}`);
    for (const name of rooms) {
        await ns.joinRoom(name);
    }
    const firstId = conn.id;
    const tokensBefore = requestTokens(log);
    log.length = 0;
    seen.length = 0;
    await kick(conn);

    assert.deepEqual(await inbox.next('lost'), { code: 4000, reason: 'kicked', reconnecting: true });
    const restored = await inbox.next('restored');
    assert.deepEqual(restored, { failed: [], recovered: false, previousId: firstId, attempts: 1 });
    assert.notEqual(conn.id, firstId, 'a new connection, a new id');
    assert.equal(conn.state, 'open');
    assert.equal(conn.wasReconnected(), true);
    assert.equal(conn.reconnectTries, 1);
    assert.deepEqual(await api(`/upgrade?id=${conn.id}`), { name: 'ann', reconnect: 1 });

    // The same objects, connected again on the server.
    assert.equal(conn.namespace('default'), ns);
    assert.equal(conn.namespace('other'), other);
    assert.deepEqual([...ns.rooms.keys()], rooms);
    assert.deepEqual(await api(`/namespaces?id=${conn.id}`), ['default', 'other']);
    for (const name of rooms) {
        assert.deepEqual(await members('default', name), [conn.id], name);
    }
    assert.equal((await other.ask('ask', 'back')).Body, 'other:back');

    // On the wire: connects in the order connected, each namespace's joins in the order
    // joined, every request sent after the previous one was answered.
    const requests = log.filter(([dir, frame]) => dir === 'out' && frame.startsWith('$')).map(([, f]) => f);
    assert.deepEqual(
        requests.slice(0, 5).map((frame) => frame.split(';').slice(1, 4).join(' ')),
        [
            'default  _OnNamespaceConnect',
            ...rooms.map((name) => `default ${name} _OnRoomJoin`),
            'other  _OnNamespaceConnect',
        ],
    );
    assertOneAtATime(log, ';_On');

    // The page saw neffos.js' events: forced leaves and disconnect, then connected and
    // joined again (each join preceded by the local _OnRoomJoin, which may refuse).
    assert.deepEqual(seen, [
        ...rooms.flatMap((name) => [
            [wsmvc.OnRoomLeave, name, true],
            [wsmvc.OnRoomLeft, name, true],
        ]),
        [wsmvc.OnNamespaceDisconnect, '', true],
        [wsmvc.OnNamespaceConnected, '', false],
        ...rooms.flatMap((name) => [
            [wsmvc.OnRoomJoin, name, false],
            [wsmvc.OnRoomJoined, name, false],
        ]),
    ]);

    // No token was used twice, before or after the reconnect.
    const tokens = [...tokensBefore, ...requestTokens(log)];
    assert.equal(new Set(tokens).size, tokens.length, `tokens repeat: ${tokens}`);
    await conn.close();
});

test('what the app sends while reconnecting waits, bounded, and goes in order once restored', async () => {
    const tag = newTag();
    const inbox = new Inbox();
    const conn = await wsmvc.dial(
        endpoint(tag),
        { default: {} },
        options({ reconnect: QUICK_RECONNECT, queueLimit: 4, ...lifecycle(inbox) }),
    );
    const ns = await conn.connect('default');
    const room = await ns.joinRoom(`q-${tag}`);
    await hold(tag);
    await kick(conn);
    await inbox.next('lost');
    assert.equal(conn.state, 'reconnecting');

    assert.equal(ns.emit('note', 'one'), true);
    assert.equal(room.emit('note', 'two'), true);
    const asked = ns.ask('ask', 'three');
    assert.equal(ns.emit('note', 'four'), true);
    assert.equal(ns.emit('note', 'five'), false, 'the queue holds 4 messages');
    await assert.rejects(ns.ask('ask', 'six'), { name: 'ConnectionClosedError', message: /4 messages wait already/ });

    await release(tag);
    const restored = await inbox.next('restored');
    assert.ok(restored.attempts >= 1);
    assert.equal((await within(asked, 'the queued ask')).Body, 'pong:three');
    assert.equal((await ns.ask('ask', 'after')).Body, 'pong:after'); // the server handled the notes before
    assert.deepEqual(await api(`/notes?client=${tag}`), ['one', 'two', 'four']);
    await conn.close();
});

test('the server refusing the reconnect (its handshake says H) ends it: onClosed, asks rejected', async () => {
    const tag = newTag();
    const inbox = new Inbox();
    const conn = await wsmvc.dial(
        endpoint(tag),
        { default: {} },
        options({ reconnect: QUICK_RECONNECT, ...lifecycle(inbox) }),
    );
    const ns = await conn.connect('default');
    await hold(tag, 'reject');
    try {
        await kick(conn);
        await inbox.next('lost');
        const queued = ns.ask('ask', 'never');
        const closed = await inbox.next('closed');
        assert.equal(closed.error.name, 'RejectError');
        assert.equal(closed.error.message, 'held');
        assert.equal(closed.byClient, false);
        await assert.rejects(queued, { name: 'RejectError', message: 'held' });
        assert.equal(conn.isClosed(), true);
        assert.equal(conn.namespace('default'), undefined);
    } finally {
        await release(tag);
    }
});

test('reconnect gives up after maxAttempts', async () => {
    const tag = newTag();
    const inbox = new Inbox();
    const conn = await wsmvc.dial(
        endpoint(tag),
        { default: {} },
        options({ reconnect: { ...QUICK_RECONNECT, maxAttempts: 3 }, ...lifecycle(inbox) }),
    );
    await hold(tag);
    try {
        await kick(conn);
        await inbox.next('lost');
        const closed = await inbox.next('closed');
        assert.equal(closed.error.name, 'ConnectionClosedError');
        assert.equal(closed.error.message, 'gave up reconnecting after 3 attempts');
        assert.equal(conn.isClosed(), true);
    } finally {
        await release(tag);
    }
});

test('close() while reconnecting stops it and rejects what waits', async () => {
    const tag = newTag();
    const inbox = new Inbox();
    const conn = await wsmvc.dial(
        endpoint(tag),
        { default: {} },
        options({ reconnect: QUICK_RECONNECT, ...lifecycle(inbox) }),
    );
    const ns = await conn.connect('default');
    await hold(tag);
    try {
        await kick(conn);
        await inbox.next('lost');
        const queued = ns.ask('ask', 'never');
        await within(conn.close(), 'close');
        await assert.rejects(queued, { name: 'ConnectionClosedError', message: 'closed by the client' });
        assert.deepEqual(await inbox.next('closed'), { code: 1000, reason: '', byClient: true });
        assert.equal(conn.state, 'closed');
        // No attempt follows: the test process would not end with a timer left.
    } finally {
        await release(tag);
    }
});

test('a room the server (or the page) refuses after a reconnect is dropped and reported', async () => {
    let refuse = false;
    const inbox = new Inbox();
    const conn = await wsmvc.dial(
        endpoint(newTag()),
        {
            default: {
                ...inbox.handlers(wsmvc.OnRoomLeft),
                [wsmvc.OnRoomJoin]: (ns, msg) =>
                    refuse && msg.Room.startsWith('gone') ? new Error('not again') : undefined,
            },
        },
        options({ reconnect: QUICK_RECONNECT, ...lifecycle(inbox) }),
    );
    const ns = await conn.connect('default');
    const stays = await ns.joinRoom('stays');
    await ns.joinRoom('gone-1');
    refuse = true;
    await kick(conn);
    const restored = await inbox.next('restored');
    assert.deepEqual(
        restored.failed.map(({ namespace, room, error }) => [namespace, room, error.message]),
        [['default', 'gone-1', 'not again']],
    );
    assert.deepEqual([...ns.rooms.keys()], ['stays']);
    assert.equal(ns.room('stays'), stays);
    assert.deepEqual(await members('default', 'gone-1'), []);
    assert.deepEqual(await members('default', 'stays').then((ids) => ids.includes(conn.id)), true);
    await conn.close();
});

test("what the server connected or joined on its own is not restored: it is the server's to redo", async () => {
    const inbox = new Inbox();
    const conn = await wsmvc.dial(
        endpoint(newTag()),
        { default: {}, other: {} },
        options({ reconnect: QUICK_RECONNECT, ...lifecycle(inbox) }),
    );
    const ns = await conn.connect('default');
    const mine = await ns.joinRoom(`mine-${conn.id}`);
    const theirs = `theirs-${conn.id}`;
    assert.equal((await ns.ask('server_join', theirs)).Body, `joined:${theirs}`);
    assert.equal((await ns.ask('server_connect', 'other')).Body, 'connected:other');
    assert.ok(conn.namespace('other') && ns.room(theirs));
    const firstId = conn.id;
    await kick(conn);
    assert.deepEqual(await inbox.next('restored'), { failed: [], recovered: false, previousId: firstId, attempts: 1 });
    assert.deepEqual([...ns.rooms.values()], [mine]);
    assert.equal(conn.namespace('other'), undefined);
    assert.deepEqual(await api(`/namespaces?id=${conn.id}`), ['default']);
    assert.deepEqual(await members('default', theirs), []);
    assert.deepEqual(await members('default', mine.name), [conn.id]);
    await conn.close();
});

test('queueLimit 0: while reconnecting, emit and ask are refused at once', async () => {
    const tag = newTag();
    const inbox = new Inbox();
    const conn = await wsmvc.dial(
        endpoint(tag),
        { default: {} },
        options({ reconnect: QUICK_RECONNECT, queueLimit: 0, ...lifecycle(inbox) }),
    );
    const ns = await conn.connect('default');
    await hold(tag);
    try {
        await kick(conn);
        await inbox.next('lost');
        assert.equal(ns.emit('note', 'lost'), false);
        await assert.rejects(ns.ask('ask', 'x'), { name: 'ConnectionClosedError' });
    } finally {
        await release(tag);
    }
    await inbox.next('restored');
    assert.equal((await ns.ask('ask', 'x')).Body, 'pong:x');
    assert.deepEqual(await api(`/notes?client=${tag}`), []);
    await conn.close();
});
