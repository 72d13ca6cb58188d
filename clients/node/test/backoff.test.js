'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { Backoff } = require('..');

test('delays grow, stay under the cap, and start over after reset()', () => {
  const b = new Backoff({ initial: 100, maximum: 1000 });
  const delays = Array.from({ length: 12 }, () => b.next());
  delays.forEach((d, n) => {
    const ceiling = Math.min(1000, 100 * 2 ** n);
    assert.ok(d >= ceiling / 2 && d <= ceiling, `delay ${n} = ${d}`);
  });
  b.reset();
  assert.ok(b.next() <= 100);
});

test('nonsense settings are refused', () => {
  assert.throws(() => new Backoff({ initial: 0 }), RangeError);
  assert.throws(() => new Backoff({ initial: 10, maximum: 5 }), RangeError);
});
