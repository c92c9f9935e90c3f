// Asks both ways: answers, error answers, timeouts, closes, and the server asking the client.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { endpoint, options, recordingWebSocket, requestTokens, within, wsmvc } from './support.mjs';

let conn;
let ns;
const questions = [];
let answer = (msg) => `answer to ${msg.Body}`;

before(async () => {
    conn = await wsmvc.dial(
        endpoint(),
        {
            default: {
                question: (nsConn, msg) => {
                    questions.push(msg);
                    return answer(msg);
                },
            },
        },
        options({ askTimeout: 2000 }),
    );
    ns = await conn.connect('default');
});

after(() => conn.close());

test('ask resolves with the answer Message', async () => {
    const reply = await within(ns.ask('ask', 'hi'), 'ask');
    assert.ok(reply instanceof wsmvc.Message);
    assert.equal(reply.Body, 'pong:hi');
    assert.equal(reply.text, 'pong:hi');
    assert.equal(reply.Event, 'ask');
    assert.equal(reply.Namespace, 'default');
    assert.equal(reply.isError, false);
    // Bodies keep every character: separators, newlines, the escape text, non-ASCII.
    const body = 'a;b;;c\nd\r\n@%!semicolon@%! é ✓ 😀';
    assert.equal((await ns.ask('ask', body)).Body, `pong:${body}`);
    // Anything else than a string or bytes goes as JSON.
    assert.equal((await ns.ask('ask', { n: 1 })).Body, 'pong:{"n":1}');
    assert.equal((await ns.ask('ask', 42)).Body, 'pong:42');
});

test("an error answer rejects with the server's text (EventError)", async () => {
    await assert.rejects(ns.ask('askerr'), (err) => {
        assert.ok(err instanceof wsmvc.EventError);
        assert.equal(err.name, 'EventError');
        assert.equal(err.message, 'ask failed');
        assert.equal(err.msg.Event, 'askerr');
        return true;
    });
    // An event the server has no handler for: wsmvc answers with an error.
    await assert.rejects(ns.ask('nothing-here'), { message: "unknown event 'nothing-here'" });
});

test('an ask with no answer rejects with AskTimeoutError after its timeout', async () => {
    const started = Date.now();
    await assert.rejects(ns.ask('silent', '', { timeout: 150 }), (err) => {
        assert.ok(err instanceof wsmvc.AskTimeoutError);
        assert.equal(err.name, 'AskTimeoutError');
        assert.equal(err.message, 'no answer to ask "silent" in namespace "default" within 150 ms');
        assert.equal(err.timeout, 150);
        return true;
    });
    const waited = Date.now() - started;
    assert.ok(waited >= 145 && waited < 1500, `waited ${waited} ms`);
    // The default is the askTimeout dial option (2000 ms here).
    await assert.rejects(ns.ask('silent'), /within 2000 ms/);
    // The connection is fine.
    assert.equal((await ns.ask('ask', 'still')).Body, 'pong:still');
});

test("the server asks the client: the handler's return value answers", async () => {
    assert.equal((await ns.ask('server_ask', 'q1')).Body, 'client said:answer to q1');
    const [question] = questions.splice(0);
    assert.equal(question.Body, 'q1');
    assert.match(question.wait, /^\d+$/, 'the server asked with its own token');
    assert.equal(question.IsLocal, false);

    answer = async (msg) => wsmvc.reply(`later ${msg.Body}`); // async handlers, reply()
    assert.equal((await ns.ask('server_ask', 'q2')).Body, 'client said:later q2');
    answer = () => ({ ok: true });
    assert.equal((await ns.ask('server_ask', 'q3')).Body, 'client said:{"ok":true}');
});

test('a handler that throws, or returns an Error, answers the server with the error text', async () => {
    answer = () => {
        throw new Error('no maths today');
    };
    assert.equal((await ns.ask('server_ask', 'q')).Body, 'client refused:no maths today');
    answer = () => new Error('returned error');
    assert.equal((await ns.ask('server_ask', 'q')).Body, 'client refused:returned error');
    answer = (msg) => `answer to ${msg.Body}`;
});

test('a server ask of an event the client has no handler for gets an error answer', async () => {
    const bare = await wsmvc.dial(endpoint(), { default: {} }, options());
    try {
        const bareNs = await bare.connect('default');
        assert.equal((await bareNs.ask('server_ask', 'q')).Body, "client refused:unknown event 'question'");
    } finally {
        await bare.close();
    }
});

test('close() while asks wait rejects them with ConnectionClosedError at once', async () => {
    const own = await wsmvc.dial(endpoint(), { default: {}, other: {} }, options());
    const ownNs = await own.connect('default');
    const waiting = [ownNs.ask('silent', '', { timeout: 60_000 }), own.connect('other').catch((e) => e)];
    const closing = own.close();
    await assert.rejects(within(waiting[0], 'the ask to settle', 1000), (err) => {
        assert.ok(err instanceof wsmvc.ConnectionClosedError);
        assert.equal(err.message, 'closed by the client');
        assert.ok(wsmvc.isCloseError(err));
        return true;
    });
    assert.equal((await waiting[1]).name, 'ConnectionClosedError');
    await closing;
    await assert.rejects(ownNs.ask('ask'), { name: 'ConnectionClosedError', message: 'the connection is closed' });
});

test('request tokens are never reused, across connections too', async () => {
    const log = [];
    const WebSocket = recordingWebSocket(log);
    const tokens = [];
    for (let i = 0; i < 2; i++) {
        const c = await wsmvc.dial(endpoint(), { default: {} }, { WebSocket });
        const n = await c.connect('default');
        await Promise.all([n.ask('ask', 'a'), n.ask('ask', 'b'), n.joinRoom(`r${i}`)]);
        await c.close();
    }
    tokens.push(...requestTokens(log));
    assert.equal(tokens.length, 8);
    assert.equal(new Set(tokens).size, tokens.length, `tokens repeat: ${tokens}`);
});

test('Conn.ask sends a Message as a request', async () => {
    const msg = new wsmvc.Message({ Namespace: 'default', Event: 'ask', Body: 'raw' });
    assert.equal((await conn.ask(msg)).Body, 'pong:raw');
    assert.equal(msg.wait, '', "the caller's message is not changed");
});
