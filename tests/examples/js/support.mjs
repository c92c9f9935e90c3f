// Shared by the examples' Node scripts: what they import and how they report.
//
// The packages come from the interop suite's install (tests/interop/node_modules, `npm ci`
// there), imported by path; neffos.js itself then finds `ws` next to it.
//
// A script reports what the client code sees, one JSON object per stdout line:
// {"step": <name>, ...values}; the pytest side asserts. Exit status: 0 when the script ran
// to its end; 1 on an exception, including an awaited reply or event that did not come in
// time; 3 when the watchdog fired; 64 for a usage error.

import * as neffos from '../../interop/node_modules/neffos.js/dist/neffos.js';
import WebSocket from '../../interop/node_modules/ws/wrapper.mjs';

export { neffos, WebSocket };

export const WAIT_MS = 5000; // one awaited reply or pushed event
const WATCHDOG_MS = 40000; // the whole script

export function report(step, fields = {}) {
    process.stdout.write(JSON.stringify({ step, ...fields }) + '\n');
}

// Resolve with `promise`, or reject when it takes longer than `ms`.
export function within(promise, what, ms = WAIT_MS) {
    let timer;
    const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    });
    return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// {resolved: value} or {rejected: error text}: what a settled promise gave the caller.
export async function outcome(promise, what) {
    try {
        return { resolved: await within(promise, what) };
    } catch (err) {
        if (err instanceof Error && err.message.startsWith('timed out after')) {
            throw err;
        }
        return { rejected: errorText(err) };
    }
}

// neffos.js rejects with strings (error answers) or with the websocket's error event.
export function errorText(err) {
    if (err !== null && typeof err === 'object' && typeof err.message === 'string') {
        return err.message;
    }
    return String(err);
}

// Values received by a handler, in order; `next()` waits for the next one.
export class Inbox {
    constructor() {
        this.items = [];
        this.taken = 0;
        this.wake = null;
    }

    push(item) {
        this.items.push(item);
        if (this.wake !== null) {
            this.wake();
        }
    }

    next(what) {
        const arrived = new Promise((resolve) => {
            const look = () => {
                if (this.taken < this.items.length) {
                    this.wake = null;
                    resolve(this.items[this.taken++]);
                } else {
                    this.wake = look;
                }
            };
            look();
        });
        return within(arrived, what);
    }
}

// Run `main(args)` with a watchdog; report `end` when it returns.
export function run(usage, argc, main) {
    const args = process.argv.slice(2);
    if (args.length < argc) {
        process.stderr.write(`usage: ${usage}\n`);
        process.exit(64);
    }
    const watchdog = setTimeout(() => {
        process.stderr.write(`watchdog: still running after ${WATCHDOG_MS} ms\n`);
        process.exit(3);
    }, WATCHDOG_MS);
    main(args).then(
        () => {
            clearTimeout(watchdog);
            report('end');
            process.exit(0);
        },
        (err) => {
            process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
            process.exit(1);
        },
    );
}
