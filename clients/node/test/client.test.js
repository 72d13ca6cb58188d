'use strict';

// Consumer and Inbox against the test cluster.  Everything that talks to the
// server is in this one file, so that the server restarts below never
// disturb another test file that the runner might run alongside.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const pg = require('pg');
const { Backoff, Consumer, Inbox, Message, Notification } = require('..');
const { config, withClient, createDatabase, dropDatabase, restartServer, sleep, waitFor } = require('./helpers');

const DB = 'notify_ext_e2e_nodeclient';
const APP = 'nodeclient_app';
const SVC = 'nodeclient_svc';

let db; // a superuser connection to DB
let dbConfig;
let appConfig;

async function reconnectDb() {
  // After a restart the old connection is gone.
  db.removeAllListeners('error');
  db.on('error', () => {});
  await db.end().catch(() => {});
  db = new pg.Client(dbConfig);
  db.on('error', () => {});
  await db.connect();
}

async function newConsumer(resource, ackWait = '30 seconds') {
  await db.query("SELECT notify_ext.register_resource($1, 'project')", [resource]);
  const r = await db.query(
    "SELECT notify_ext.create_stream_consumer($1, deliver => 'new', ack_wait => $2::interval) AS id",
    [resource, ackWait],
  );
  return r.rows[0].id;
}

async function publish(resource, n, start = 0) {
  await db.query('BEGIN');
  for (let i = start; i < start + n; i++) {
    await db.query("SELECT notify_ext.publish('jobs', 'JOB_DONE', jsonb_build_object('i', $1::int), $2)", [i, resource]);
  }
  await db.query('COMMIT');
}

async function seqsOf(resource) {
  const r = await db.query('SELECT seq FROM notify_ext.events WHERE resource_id = $1 ORDER BY seq', [resource]);
  return r.rows.map((row) => Number(row.seq));
}

async function info(consumer) {
  return (await db.query('SELECT notify_ext.consumer_info($1) AS i', [consumer])).rows[0].i;
}

async function notify(recipient, message, type = 'NOTE') {
  const r = await db.query('SELECT notify_ext.create_notification($1, $2, $3) AS id', [recipient, type, message]);
  return Number(r.rows[0].id);
}

async function unread(principal) {
  await db.query('BEGIN');
  await db.query("SELECT set_config('notify_ext.principal', $1, true)", [principal]);
  const r = await db.query('SELECT notify_ext.unread_count() AS n');
  await db.query('COMMIT');
  return Number(r.rows[0].n);
}

/** Runs consumer.run() in the background, recording every message. */
function runInBackground(consumer, extra) {
  const state = { got: [], arrivals: [], error: null };
  state.done = consumer
    .run(async (batch) => {
      const now = Date.now();
      for (const m of batch) {
        state.got.push(m);
        state.arrivals.push(now);
      }
      if (extra) await extra(batch);
    })
    .catch((err) => {
      state.error = err;
    });
  state.distinct = () => new Set(state.got.map((m) => m.seq)).size;
  return state;
}

/** Iterates an inbox in the background. */
function iterateInBackground(inbox, options) {
  const state = { got: [], arrivals: [], error: null };
  state.done = (async () => {
    for await (const n of inbox.notifications(options)) {
      state.got.push(n);
      state.arrivals.push(Date.now());
    }
  })().catch((err) => {
    state.error = err;
  });
  return state;
}

before(async () => {
  dbConfig = await createDatabase(DB);
  db = new pg.Client(dbConfig);
  db.on('error', () => {});
  await db.connect();
  await db.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1`, [SVC]);
  for (const r of [SVC, APP]) await db.query(`DROP ROLE IF EXISTS ${r}`);
  await db.query(`CREATE ROLE ${APP} NOLOGIN`);
  await db.query(`CREATE ROLE ${SVC} LOGIN IN ROLE ${APP}`);
  await db.query(`ALTER DATABASE ${DB} SET notify_ext.app_role = '${APP}'`);
  appConfig = config(DB, SVC);
});

after(async () => {
  await db.end().catch(() => {});
  await dropDatabase(DB);
  await withClient('postgres', async (c) => {
    for (const r of [SVC, APP]) await c.query(`DROP ROLE IF EXISTS ${r}`);
  });
});

describe('Consumer', () => {
  it('drains batches in seq order and acknowledges them', async () => {
    const id = await newConsumer('drain');
    await publish('drain', 250);
    const batches = [];
    const c = new Consumer({ connection: dbConfig, consumer: id, batchSize: 100 });
    try {
      await c.drain((batch) => {
        batches.push(batch);
      });
    } finally {
      await c.close();
    }
    assert.deepEqual(batches.map((b) => b.length), [100, 100, 50]);
    assert.deepEqual(batches.flat().map((m) => m.seq), await seqsOf('drain'));
    const first = batches[0][0];
    assert.ok(first instanceof Message);
    assert.deepEqual([first.stream, first.operation, first.payload, first.resourceId, first.deliveryCount],
      ['jobs', 'JOB_DONE', { i: 0 }, 'drain', 1]);
    const state = await info(id);
    assert.equal(state.num_ack_pending, 0);
    assert.equal(state.num_pending, 0);
  });

  it('is woken by a commit at once', async () => {
    const id = await newConsumer('wake');
    // A poll interval far longer than the test: only a wake-up can bring it.
    const c = new Consumer({ connection: dbConfig, consumer: id, pollInterval: 60000 });
    const run = runInBackground(c);
    try {
      await sleep(300);
      for (let round = 0; round < 3; round++) {
        const sent = Date.now();
        await publish('wake', 1, round);
        assert.ok(await waitFor(() => run.distinct() === round + 1, 5000), 'no delivery');
        assert.ok(run.arrivals[round] - sent < 1000, `woken after ${run.arrivals[round] - sent} ms`);
      }
      c.stop();
      await run.done;
    } finally {
      await c.close();
    }
    assert.equal(run.error, null);
    assert.deepEqual(run.got.map((m) => m.seq), await seqsOf('wake'));
  });

  it('long-polls without LISTEN, and stop() ends the long poll', async () => {
    const id = await newConsumer('longpoll');
    const c = new Consumer({ connection: dbConfig, consumer: id, listen: false, pollInterval: 30000 });
    const run = runInBackground(c);
    try {
      await sleep(300);
      const sent = Date.now();
      await publish('longpoll', 3);
      assert.ok(await waitFor(() => run.distinct() === 3, 5000));
      assert.ok(run.arrivals[2] - sent < 2000);
      await sleep(200);
      const stopped = Date.now();
      c.stop();
      await run.done;
      assert.ok(Date.now() - stopped < 2000, 'stop() did not end the long poll');
    } finally {
      await c.close();
    }
    assert.equal(run.error, null);
    assert.equal((await info(id)).num_ack_pending, 0);
  });

  it('leaves the batch of a failing handler for redelivery', async () => {
    const id = await newConsumer('failing', '1 second');
    await publish('failing', 5);
    const c = new Consumer({ connection: dbConfig, consumer: id, batchSize: 10, pollInterval: 200 });
    try {
      await assert.rejects(c.run(() => {
        throw new Error('handler failed');
      }), /handler failed/);
      assert.equal((await info(id)).num_ack_pending, 5);
      await sleep(1100);
      const again = [];
      await c.drain((batch) => {
        again.push(...batch);
      });
      assert.deepEqual(again.map((m) => m.seq), await seqsOf('failing'));
      assert.deepEqual([...new Set(again.map((m) => m.deliveryCount))], [2]);
    } finally {
      await c.close();
    }
    assert.equal((await info(id)).num_ack_pending, 0);
  });

  it('gives clear errors', async () => {
    assert.throws(() => new Consumer({ connection: dbConfig, consumer: 'nope' }), /uuid/);
    assert.throws(() => new Consumer({ connection: dbConfig, consumer: '00000000-0000-0000-0000-000000000000', batchSize: 0 }), /batchSize/);
    const unknown = new Consumer({ connection: dbConfig, consumer: '00000000-0000-0000-0000-000000000000' });
    await assert.rejects(unknown.drain(() => {}), (err) => err.code === '42704');
    await unknown.close();
    const unreachable = new Consumer({
      connection: { host: '/nonexistent', port: 1, database: DB },
      consumer: '00000000-0000-0000-0000-000000000000',
    });
    await assert.rejects(unreachable.drain(() => {}), (err) => err.code === 'ENOENT' || /connect/.test(err.message));
    await unreachable.close();
    await assert.rejects(unreachable.drain(() => {}), /closed/);
  });

  it('stop() before run() makes it return at once', async () => {
    const id = await newConsumer('stopfirst');
    const c = new Consumer({ connection: dbConfig, consumer: id, pollInterval: 60000 });
    c.stop();
    const started = Date.now();
    await c.run(() => {});
    assert.ok(Date.now() - started < 1000);
    await c.close();
    await c.close();
  });

  it('reconnects after a server restart in the middle of a drain, skipping nothing', async () => {
    const id = await newConsumer('restart', '2 seconds');
    await publish('restart', 300);
    const c = new Consumer({
      connection: dbConfig,
      consumer: id,
      batchSize: 20,
      pollInterval: 500,
      backoff: new Backoff({ initial: 50, maximum: 500 }),
    });
    let reconnecting = 0;
    c.on('reconnecting', () => {
      reconnecting += 1;
    });
    const run = runInBackground(c, () => sleep(50));
    let state;
    let expected;
    try {
      assert.ok(await waitFor(() => run.distinct() >= 40, 10000));
      await restartServer();
      assert.ok(run.distinct() < 300, 'drained before the restart');
      await reconnectDb();
      await publish('restart', 50, 300);
      expected = await seqsOf('restart');
      assert.equal(expected.length, 350);
      assert.ok(await waitFor(() => run.distinct() === 350, 30000), 'events were lost');
      await waitFor(async () => (await info(id)).num_ack_pending === 0, 10000);
      state = await info(id);
      c.stop();
      await run.done;
    } finally {
      await c.close();
    }
    assert.equal(run.error, null);
    assert.ok(c.reconnects >= 1 && reconnecting >= 1);
    const seen = run.got.map((m) => m.seq);
    assert.deepEqual([...new Set(seen)].sort((a, b) => a - b), expected, 'an event was skipped');
    assert.ok(seen.length - new Set(seen).size <= 20, 'more than one batch came twice');
    assert.equal(state.num_ack_pending, 0);
    assert.equal(state.num_pending, 0);
  });
});

describe('Inbox', () => {
  it('yields one principal\'s notifications live and marks them read', async () => {
    const old = await notify('js_alice', 'from before');
    const inbox = new Inbox({ connection: appConfig, principal: 'js_alice' });
    const it = iterateInBackground(inbox);
    let mine;
    try {
      assert.ok(await waitFor(() => it.got.length === 1, 5000));
      const sent = Date.now();
      mine = await notify('js_alice', '<b>hello</b> alice');
      await notify('js_bob', 'for bob only');
      assert.ok(await waitFor(() => it.got.length === 2, 5000));
      assert.ok(it.arrivals[1] - sent < 1000);
      await sleep(300);
      inbox.stop();
      await it.done;
    } finally {
      await inbox.close();
    }
    assert.equal(it.error, null);
    assert.deepEqual(it.got.map((n) => n.id), [old, mine]);
    assert.ok(it.got[1] instanceof Notification);
    assert.equal(it.got[1].message, '<b>hello</b> alice');
    assert.ok(it.got[1].ts instanceof Date);
    assert.equal(await unread('js_alice'), 0);
    assert.equal(await unread('js_bob'), 1);
  });

  it('leaves the last one unread after break', async () => {
    const first = await notify('js_carol', 'one');
    const second = await notify('js_carol', 'two');
    const inbox = new Inbox({ connection: appConfig, principal: 'js_carol' });
    try {
      for await (const n of inbox) {
        assert.equal(n.id, first);
        break;
      }
      assert.equal(await inbox.unreadCount(), 2);
      const got = [];
      for await (const n of inbox.notifications({ idleTimeout: 300 })) got.push(n.id);
      assert.deepEqual(got, [first, second]);
      assert.equal(await inbox.unreadCount(), 0);
      assert.equal((await inbox.list()).itemsInTotal, 2);
      assert.deepEqual(await inbox.markAsRead([first, 999999999]), [999999999]);
      assert.equal(await inbox.markAllAsRead(), 0);
      assert.equal((await inbox.get(first)).message, 'one');
    } finally {
      await inbox.close();
    }
  });

  it('polls without LISTEN', async () => {
    const inbox = new Inbox({ connection: appConfig, principal: 'js_frank', listen: false, pollInterval: 200 });
    const it = iterateInBackground(inbox);
    try {
      await sleep(200);
      const id = await notify('js_frank', 'polled');
      assert.ok(await waitFor(() => it.got.length === 1, 5000));
      assert.equal(it.got[0].id, id);
      inbox.stop();
      await it.done;
    } finally {
      await inbox.close();
    }
    assert.throws(() => new Inbox({ connection: appConfig, listen: false, catchUp: false }), /catching up/);
  });

  it('reconnects after a server restart', async () => {
    const inbox = new Inbox({ connection: appConfig, principal: 'js_erin', backoff: { initial: 50, maximum: 500 } });
    const it = iterateInBackground(inbox);
    const ids = [];
    try {
      ids.push(await notify('js_erin', 'before'));
      assert.ok(await waitFor(() => it.got.length === 1, 5000));
      await restartServer();
      await reconnectDb();
      // Created while the inbox is still reconnecting, or after: either way
      // it arrives (live, or by catching up).
      ids.push(await notify('js_erin', 'after'));
      assert.ok(await waitFor(() => it.got.length === 2, 15000));
      ids.push(await notify('js_erin', 'later'));
      assert.ok(await waitFor(() => it.got.length === 3, 5000));
      inbox.stop();
      await it.done;
    } finally {
      await inbox.close();
    }
    assert.equal(it.error, null);
    assert.deepEqual(it.got.map((n) => n.id), ids);
    assert.ok(inbox.reconnects >= 1);
  });
});
