// wsmvc.d.ts: it declares every export of wsmvc.js (and nothing else), and a page's typical
// use of the client type-checks against it (types/usage.ts, with tsc --strict).

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { wsmvc } from './support.mjs';

const DTS = new URL('../../wsmvc/static/wsmvc.d.ts', import.meta.url);
const TSC = fileURLToPath(new URL('node_modules/typescript/bin/tsc', import.meta.url));
const TSCONFIG = fileURLToPath(new URL('types/tsconfig.json', import.meta.url));

test('the declarations name every export of the module, and no other value', async () => {
    const text = await readFile(DTS, 'utf8');
    const declared = [...text.matchAll(/^export (?:const|function|class) (\w+)/gm)].map((m) => m[1]);
    assert.deepEqual([...new Set(declared)].sort(), Object.keys(wsmvc).sort());
});

test('a typical page type-checks with tsc --strict, and its mistakes do not', async () => {
    try {
        await promisify(execFile)(process.execPath, [TSC, '-p', TSCONFIG], { timeout: 60_000 });
    } catch (err) {
        assert.fail(`tsc failed:\n${err.stdout}${err.stderr}`);
    }
});
