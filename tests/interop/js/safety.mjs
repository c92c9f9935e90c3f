// The real neffos.js client (on Node's `ws`, which fails a connection on a text frame that
// is not UTF-8, as browsers do) against tests/apps/safety.py: what it sees of an answer and
// an event whose bodies are not UTF-8, of a long unknown event name, and of the room bound.
//
//     node js/safety.mjs <ws-url>
//
// One JSON line per step ({"step": <name>, ...}); `end` last. Exit status 1 on an error or
// on a reply that did not come within WAIT_MS (neffos.js itself never times out).

import * as neffos from 'neffos.js';

const WAIT_MS = 5000;

function report(step, fields = {}) {
    process.stdout.write(JSON.stringify({ step, ...fields }) + '\n');
}

function within(promise, what) {
    let timer;
    const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${WAIT_MS} ms: ${what}`)), WAIT_MS);
    });
    return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function body(value) {
    if (value instanceof ArrayBuffer) {
        return { ArrayBuffer: Array.from(new Uint8Array(value)) };
    }
    return { text: value === undefined ? null : value };
}

async function main(url) {
    let closed = null;
    let pushed;
    const data = new Promise((resolve) => { pushed = resolve; });
    const conn = await within(neffos.dial(url, {
        default: { data: (ns, msg) => { pushed(msg); } },
    }), 'dial');
    conn.conn.addEventListener('close', (event) => { closed = event.code; });
    const ns = await within(conn.connect('default'), 'connect');

    const answer = await within(ns.ask('bytes', ''), 'ask bytes');
    report('bytes', { body: body(answer.Body), binary: Boolean(answer.SetBinary) });

    ns.emit('emit', '');
    const event = await within(data, 'the data event');
    report('emit', { body: body(event.Body), binary: Boolean(event.SetBinary) });

    const still = await within(ns.ask('text', ''), 'ask text');
    report('text', { body: body(still.Body), closed });

    const name = 'x'.repeat(100000);
    try {
        await within(ns.ask(name, ''), 'ask unknown');
        report('unknown', { rejected: null });
    } catch (err) {
        report('unknown', { rejected: err.message });
    }

    await within(ns.joinRoom('a'), 'join a');
    await within(ns.joinRoom('b'), 'join b');
    try {
        await within(ns.joinRoom('c'), 'join c');
        report('third room', { rejected: null });
    } catch (err) {
        report('third room', { rejected: err.message });
    }
    conn.close();
    report('end');
}

main(process.argv[2]).then(
    () => process.exit(0),
    (err) => {
        process.stderr.write(String(err && err.stack || err) + '\n');
        process.exit(1);
    },
);
