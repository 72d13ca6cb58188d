'use strict';

// index.d.ts against the code: TypeScript compiles test/types/usage.ts (a
// use of every declared class), and every declared export exists at run
// time.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { execFileSync } = require('node:child_process');

const ROOT = path.resolve(__dirname, '..');

test('the declarations compile against a typical use', () => {
  const tsc = require.resolve('typescript/bin/tsc', { paths: [ROOT] });
  try {
    execFileSync(process.execPath, [tsc, '-p', path.join(__dirname, 'types')], { encoding: 'utf8' });
  } catch (err) {
    assert.fail(`tsc failed:\n${err.stdout}${err.stderr}`);
  }
});

test('every declared export exists', () => {
  const dts = fs.readFileSync(path.join(ROOT, 'index.d.ts'), 'utf8');
  const declared = [...dts.matchAll(/^export (?:declare )?(?:class|function) (\w+)/gm)].map((m) => m[1]);
  const actual = require('..');
  assert.ok(declared.length >= 5);
  for (const name of declared) assert.equal(typeof actual[name], 'function', `${name} is declared but not exported`);
});
