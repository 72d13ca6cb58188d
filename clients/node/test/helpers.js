'use strict';

// The cluster that scripts/test.sh starts: PGHOST (its socket directory),
// PGPORT and PGUSER come from the environment, and so do NOTIFY_EXT_PGDATA
// and NOTIFY_EXT_PGBIN for restarting it.  Without them, the defaults match
// the cluster scripts/test.sh leaves in <repo>/.run while it runs.

const path = require('node:path');
const { execFile } = require('node:child_process');
const { promisify } = require('node:util');
const pg = require('pg');

const REPO_DIR = path.resolve(__dirname, '..', '..', '..');
const RUN_DIR = process.env.NOTIFY_EXT_RUN_DIR || path.join(REPO_DIR, '.run');
const HOST = process.env.PGHOST || path.join(RUN_DIR, 'sock');
const PORT = Number(process.env.PGPORT || process.env.NOTIFY_EXT_PORT || 5432);
const PGDATA = process.env.NOTIFY_EXT_PGDATA || process.env.PGDATA || path.join(RUN_DIR, 'pgdata');
const PGBIN = process.env.NOTIFY_EXT_PGBIN || '/usr/lib/postgresql/15/bin';
const PGLOG = process.env.NOTIFY_EXT_PGLOG || path.join(RUN_DIR, 'postgresql.log');

function config(database, user = 'postgres') {
  return { host: HOST, port: PORT, user, database };
}

async function withClient(database, fn, user) {
  const client = new pg.Client(config(database, user));
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** A fresh database with notify_ext in it. */
async function createDatabase(name) {
  await withClient('postgres', async (c) => {
    await c.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(name)} WITH (FORCE)`);
    await c.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`);
  });
  await withClient(name, (c) => c.query('CREATE EXTENSION notify_ext'));
  return config(name);
}

async function dropDatabase(name) {
  await withClient('postgres', (c) => c.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(name)} WITH (FORCE)`));
}

async function pgCtl(...args) {
  let cmd = path.join(PGBIN, 'pg_ctl');
  let argv = ['-D', PGDATA, ...args];
  if (process.getuid && process.getuid() === 0) {
    argv = ['-u', 'postgres', '--', cmd, ...argv];
    cmd = 'runuser';
  }
  await promisify(execFile)(cmd, argv, { timeout: 180000 });
}

/** Stops the cluster as in a crash (pg_ctl -m immediate) and starts it again. */
async function restartServer() {
  await pgCtl('-m', 'immediate', '-w', 'stop');
  await pgCtl('-l', PGLOG, '-w', '-t', '120', 'start');
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls cond (sync or async) until it holds or timeoutMs passes. */
async function waitFor(cond, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return true;
    if (Date.now() > deadline) return false;
    await sleep(20);
  }
}

module.exports = { config, withClient, createDatabase, dropDatabase, restartServer, sleep, waitFor, REPO_DIR, RUN_DIR };
