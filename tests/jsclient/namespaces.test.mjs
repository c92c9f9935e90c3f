// Namespaces: connecting, refusals, disconnecting, the server connecting and disconnecting.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { Inbox, api, endpoint, options, within, wsmvc } from './support.mjs';

const inbox = new Inbox();
let conn;

before(async () => {
    const events = inbox.handlers(wsmvc.OnNamespaceConnected, wsmvc.OnNamespaceDisconnect, 'echo');
    conn = await wsmvc.dial(
        endpoint(),
        {
            default: events,
            other: inbox.handlers(wsmvc.OnNamespaceConnected, wsmvc.OnNamespaceDisconnect),
            forbidden: {},
            nowhere: {}, // declared here, unknown to the server
            picky: { [wsmvc.OnNamespaceConnect]: (ns, msg) => new Error(`not ${msg.Namespace} today`) },
        },
        options(),
    );
});

after(() => conn.close());

test('connect resolves with the NSConn once the server agreed, and fires _OnNamespaceConnected', async () => {
    const ns = await within(conn.connect('default'), 'connect');
    assert.ok(ns instanceof wsmvc.NSConn);
    assert.equal(ns.namespace, 'default');
    assert.equal(ns.conn, conn);
    const connected = await inbox.next(wsmvc.OnNamespaceConnected);
    assert.equal(connected.Namespace, 'default');
    assert.equal(connected.IsLocal, true);
    assert.equal(conn.namespace('default'), ns);
    assert.equal(await conn.connect('default'), ns, 'connecting again gives the same NSConn');
    assert.deepEqual(await api(`/namespaces?id=${conn.id}`), ['default']);
    ns.emit('echo', 'hello');
    assert.equal((await inbox.next('echo')).Body, 'hello');
});

test("a connect the server refuses rejects with the server's text", async () => {
    await assert.rejects(conn.connect('forbidden'), (err) => {
        assert.ok(err instanceof wsmvc.EventError);
        assert.equal(err.message, 'forbidden namespace');
        return true;
    });
    await assert.rejects(conn.connect('nowhere'), { name: 'EventError', message: 'bad namespace' });
    assert.equal(conn.namespace('forbidden'), undefined);
});

test('a namespace not declared in dial, or refused by the local handler, sends nothing', async () => {
    await assert.rejects(conn.connect('undeclared'), { name: 'EventError', message: 'bad namespace' });
    await assert.rejects(conn.connect('picky'), { name: 'EventError', message: 'not picky today' });
    assert.deepEqual(await api(`/namespaces?id=${conn.id}`), ['default']);
});

test('disconnect removes the namespace on both sides and fires _OnNamespaceDisconnect', async () => {
    const other = await conn.connect('other');
    assert.equal((await inbox.next(wsmvc.OnNamespaceConnected)).Namespace, 'other');
    assert.equal((await other.ask('ask', 'x')).Body, 'other:x');
    await other.disconnect();
    const gone = await inbox.next(wsmvc.OnNamespaceDisconnect);
    assert.equal(gone.Namespace, 'other');
    assert.equal(gone.IsForced, false);
    assert.equal(conn.namespace('other'), undefined);
    assert.deepEqual(await api(`/namespaces?id=${conn.id}`), ['default']);
    assert.equal(other.emit('ask', 'x'), false, 'an emit to a disconnected namespace is refused');
    await assert.rejects(other.ask('ask', 'x'), { name: 'EventError', message: 'bad namespace' });
});

test('the server connects the client to a namespace; waitServerConnect resolves with it', async () => {
    const waiting = conn.waitServerConnect('other');
    const ns = conn.namespace('default');
    assert.equal((await ns.ask('server_connect', 'other')).Body, 'connected:other');
    const other = await within(waiting, 'waitServerConnect');
    assert.equal(other.namespace, 'other');
    const connected = await inbox.next(wsmvc.OnNamespaceConnected);
    assert.equal(connected.Namespace, 'other');
    assert.equal(connected.IsLocal, false);
    assert.deepEqual(await api(`/namespaces?id=${conn.id}`), ['default', 'other']);
    assert.equal(await conn.waitServerConnect('other'), other);
});

test('the server disconnects the namespace: the client cannot refuse, its asks fail at once', async () => {
    const ns = await conn.connect('default');
    const asked = ns.ask('server_disconnect'); // its handler answers nothing
    const gone = await inbox.next(wsmvc.OnNamespaceDisconnect);
    assert.equal(gone.Namespace, 'default');
    assert.equal(gone.IsLocal, false);
    assert.equal(conn.namespace('default'), undefined);
    await assert.rejects(within(asked, 'the ask to fail', 1000), {
        name: 'ConnectionClosedError',
        message: 'namespace "default" is gone: the server disconnected',
    });
    const again = await conn.connect('default');
    assert.notEqual(again, ns, 'a new connect makes a new NSConn');
});

test('_OnAnyEvent gets the events that have no handler of their own, system ones too', async () => {
    const any = new Inbox();
    const own = await wsmvc.dial(
        endpoint(),
        { default: { echo: (ns, msg) => any.put('own', msg), [wsmvc.OnAnyEvent]: (ns, msg) => any.put('any', msg) } },
        options(),
    );
    try {
        const ns = await own.connect('default');
        ns.emit('echo', 'mine');
        assert.equal((await any.next('own')).Body, 'mine');
        // System events without a handler of their own come too (as in neffos).
        const connecting = [await any.next('any'), await any.next('any')].map((m) => m.Event);
        assert.deepEqual(connecting, [wsmvc.OnNamespaceConnect, wsmvc.OnNamespaceConnected]);
        ns.emit('push_binary');
        const other = await any.next('any');
        assert.deepEqual([other.Event, [...other.bytes]], ['bin', [0, 1, 0x3b, 0xfe]]);
    } finally {
        await own.close();
    }
});
