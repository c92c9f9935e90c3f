// Two kinds of neffos.js 0.1.34 clients for examples/seed_chat.py (the Iris "Websocket
// Controller" example), reporting what the client code sees, one JSON object per line:
//
//     node js/seed_chat.mjs chat <ws-url>    two clients chat on namespace "default"
//     node js/seed_chat.mjs stay <ws-url>    one client stays connected until the server stops
//
// Every line is {"step": <name>, ...values}; the pytest side (test_seed_chat.py) asserts.
// Exit status: 0 when the scenario ran to its end; 1 on an exception, including an event
// that did not come within its timeout; 3 when the watchdog fired; 64 for a usage error.

import * as neffos from 'neffos.js';

const WAIT_MS = 5000; // one awaited event
const STAY_WAIT_MS = 30000; // "stay" waits for the test to stop the server
const WATCHDOG_MS = 40000; // the whole scenario

function report(step, fields = {}) {
    process.stdout.write(JSON.stringify({ step, ...fields }) + '\n');
}

function within(promise, what, ms = WAIT_MS) {
    let timer;
    const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    });
    return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// The OnChat bodies one client received, in order; `next()` waits for the next one.
class ChatInbox {
    constructor() {
        this.bodies = [];
        this.taken = 0;
        this.wake = null;
    }

    handler() {
        return (nsConn, msg) => {
            this.bodies.push(msg.Body);
            if (this.wake !== null) {
                this.wake();
            }
        };
    }

    next(what) {
        const arrived = new Promise((resolve) => {
            const look = () => {
                if (this.taken < this.bodies.length) {
                    this.wake = null;
                    resolve(this.bodies[this.taken++]);
                } else {
                    this.wake = look;
                }
            };
            look();
        });
        return within(arrived, what);
    }
}

function closed(conn) {
    const ws = conn.conn;
    return new Promise((resolve) => {
        ws.addEventListener('close', (evt) => resolve({ code: evt.code }));
    });
}

async function join(url, name) {
    const inbox = new ChatInbox();
    const conn = await within(neffos.dial(url, { default: { OnChat: inbox.handler() } }), `dial ${name}`);
    const ns = await within(conn.connect('default'), `connect ${name}`);
    return { inbox, conn, ns };
}

const scenarios = {};

// Alice says hello, Bob answers, Alice says bye. The server writes one connection's
// messages in order, so when Alice gets Bob's answer, a copy of her own hello would have
// come before it; likewise Bob gets bye only after any copy of his own answer.
scenarios.chat = async (url) => {
    const alice = await join(url, 'alice');
    const bob = await join(url, 'bob');
    report('connected', { alice: alice.conn.ID, bob: bob.conn.ID });
    const written = alice.ns.emit('OnChat', 'hello from alice');
    const bobGot = await bob.inbox.next('bob: hello');
    bob.ns.emit('OnChat', 'hi alice');
    const aliceGot = await alice.inbox.next('alice: hi');
    alice.ns.emit('OnChat', 'bye bob');
    const bobGotBye = await bob.inbox.next('bob: bye');
    report('chat', {
        written,
        bobGot,
        aliceGot,
        bobGotBye,
        aliceInbox: alice.inbox.bodies,
        bobInbox: bob.inbox.bodies,
    });
    // Alice leaves the namespace first (a client-requested disconnect); Bob just closes.
    await within(alice.ns.disconnect(), 'alice disconnect');
    const aliceClosed = closed(alice.conn);
    alice.conn.close();
    const bobClosed = closed(bob.conn);
    bob.conn.close();
    report('closed', {
        alice: await within(aliceClosed, 'alice close'),
        bob: await within(bobClosed, 'bob close'),
    });
};

// Connects, reports its id, then waits for the server to close the websocket.
scenarios.stay = async (url) => {
    const carol = await join(url, 'carol');
    const serverClosed = closed(carol.conn);
    report('connected', { id: carol.conn.ID });
    report('server_closed', await within(serverClosed, 'server close', STAY_WAIT_MS));
};

async function main() {
    const [name, url] = process.argv.slice(2);
    const scenario = scenarios[name];
    if (scenario === undefined || url === undefined) {
        process.stderr.write(`usage: node seed_chat.mjs <${Object.keys(scenarios).join('|')}> <ws-url>\n`);
        process.exit(64);
    }
    const watchdog = setTimeout(() => {
        process.stderr.write(`scenario ${name} did not finish within ${WATCHDOG_MS} ms\n`);
        process.exit(3);
    }, WATCHDOG_MS);
    try {
        await scenario(url);
    } catch (err) {
        process.stderr.write(`scenario ${name} failed: ${err && err.stack ? err.stack : err}\n`);
        process.exit(1);
    }
    clearTimeout(watchdog);
    report('end');
    process.exit(0);
}

await main();
