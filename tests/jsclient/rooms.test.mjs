// Rooms: joining and leaving both ways, refusals, and room messages reaching the others.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { Inbox, assertOneAtATime, endpoint, members, options, recordingWebSocket, within, wsmvc } from './support.mjs';

const ROOM_EVENTS = [wsmvc.OnRoomJoin, wsmvc.OnRoomJoined, wsmvc.OnRoomLeave, wsmvc.OnRoomLeft];
const aliceInbox = new Inbox();
const bobInbox = new Inbox();
let alice;
let bob;

before(async () => {
    alice = await wsmvc.dial(endpoint(), { default: aliceInbox.handlers(...ROOM_EVENTS, 'chat', 'echo') }, options());
    bob = await wsmvc.dial(endpoint(), { default: bobInbox.handlers(...ROOM_EVENTS, 'chat', 'echo') }, options());
});

after(() => Promise.all([alice.close(), bob.close()]));

test('joinRoom resolves with the Room once the server joined, firing join then joined', async () => {
    const ns = await alice.connect('default');
    const room = await within(ns.joinRoom('lobby'), 'join');
    assert.ok(room instanceof wsmvc.Room);
    assert.equal(room.name, 'lobby');
    assert.equal(room.nsConn, ns);
    const join = await aliceInbox.next(wsmvc.OnRoomJoin);
    const joined = await aliceInbox.next(wsmvc.OnRoomJoined);
    assert.deepEqual([join.Room, join.IsLocal, joined.Room, joined.IsLocal], ['lobby', true, 'lobby', true]);
    assert.deepEqual(await members('default', 'lobby'), [alice.id]);
    assert.equal(ns.room('lobby'), room);
    assert.deepEqual([...ns.rooms.keys()], ['lobby']);
    assert.equal(await ns.joinRoom('lobby'), room, 'joining again gives the same Room, sends nothing');
});

test("a refused join rejects with the server's text and leaves no room", async () => {
    const ns = await alice.connect('default');
    await assert.rejects(ns.joinRoom('vip'), { name: 'EventError', message: 'vip only' });
    assert.equal(ns.room('vip'), undefined);
    assert.deepEqual(await members('default', 'vip'), []);
});

test('a room emit reaches the other members, not the sender nor those outside', async () => {
    const aliceNs = await alice.connect('default');
    const bobNs = await bob.connect('default');
    const aliceRoom = await aliceNs.joinRoom('kitchen');
    await bobNs.joinRoom('kitchen');
    assert.deepEqual((await members('default', 'kitchen')).sort(), [alice.id, bob.id].sort());

    assert.equal(aliceRoom.emit('to_room', 'dinner is ready'), true);
    const got = await bobInbox.next('chat');
    assert.deepEqual([got.Body, got.Room, got.Namespace], ['dinner is ready', 'kitchen', 'default']);
    // The server echoes into the room: proof that anything sent before has arrived.
    aliceRoom.emit('echo', 'mark');
    const mark = await aliceInbox.next('echo');
    assert.deepEqual([mark.Body, mark.Room], ['mark', 'kitchen']);
    assert.equal(aliceInbox.pending('chat'), 0, 'the sender did not get its own message');
});

test('leave fires leave then left and removes the room on both sides', async () => {
    const ns = await alice.connect('default');
    const room = await ns.joinRoom('hall');
    await room.leave();
    const leave = await aliceInbox.next(wsmvc.OnRoomLeave);
    const left = await aliceInbox.next(wsmvc.OnRoomLeft);
    assert.equal(leave.Room, 'hall');
    assert.deepEqual([left.Room, left.IsForced, left.IsLocal], ['hall', false, true]);
    assert.equal(ns.room('hall'), undefined);
    assert.deepEqual(await members('default', 'hall'), []);
    assert.equal(room.emit('echo', 'x'), false, 'a left room refuses to emit');
});

test('leaveAll leaves every room, one request at a time, in the order joined', async () => {
    const log = [];
    const conn = await wsmvc.dial(endpoint(), { default: {} }, { WebSocket: recordingWebSocket(log) });
    try {
        const ns = await conn.connect('default');
        for (const name of ['a1', 'a2', 'a3']) {
            await ns.joinRoom(name);
        }
        await ns.leaveAll();
        assert.deepEqual([...ns.rooms.keys()], []);
        for (const name of ['a1', 'a2', 'a3']) {
            assert.deepEqual(await members('default', name), []);
        }
        const leaves = log.filter(([dir, frame]) => dir === 'out' && frame.includes(';_OnRoomLeave;'));
        assert.deepEqual(
            leaves.map(([, frame]) => frame.split(';')[2]),
            ['a1', 'a2', 'a3'],
        );
        assertOneAtATime(log, ';_OnRoomLeave;');
    } finally {
        await conn.close();
    }
});

test('the server joins and removes the client: the events fire, the state follows', async () => {
    const inbox = new Inbox();
    const conn = await wsmvc.dial(endpoint(), { default: inbox.handlers(...ROOM_EVENTS) }, options());
    try {
        const ns = await conn.connect('default');
        assert.equal((await ns.ask('server_join', 'stage')).Body, 'joined:stage');
        const join = await inbox.next(wsmvc.OnRoomJoin);
        const joined = await inbox.next(wsmvc.OnRoomJoined);
        assert.deepEqual([join.Room, join.IsLocal, joined.Room], ['stage', false, 'stage']);
        assert.ok(ns.room('stage'));
        assert.deepEqual(await members('default', 'stage'), [conn.id]);

        assert.equal((await ns.ask('server_leave', 'stage')).Body, 'left:stage');
        assert.equal((await inbox.next(wsmvc.OnRoomLeave)).Room, 'stage');
        assert.equal((await inbox.next(wsmvc.OnRoomLeft)).Room, 'stage');
        assert.equal(ns.room('stage'), undefined);
        assert.deepEqual(await members('default', 'stage'), []);
    } finally {
        await conn.close();
    }
});

test('the local _OnRoomJoin handler refuses joins: of the client (nothing is sent), and of the server', async () => {
    const conn = await wsmvc.dial(
        endpoint(),
        { default: { [wsmvc.OnRoomJoin]: (ns, msg) => (msg.Room === 'attic' ? new Error('too dusty') : undefined) } },
        options(),
    );
    try {
        const ns = await conn.connect('default');
        await assert.rejects(ns.joinRoom('attic'), { name: 'EventError', message: 'too dusty' });
        assert.deepEqual(await members('default', 'attic'), []);
        // The server's joins are refused the same way: the server's ask fails.
        await assert.rejects(ns.ask('server_join', 'attic'), /too dusty/);
        assert.equal(ns.room('attic'), undefined);
    } finally {
        await conn.close();
    }
});
