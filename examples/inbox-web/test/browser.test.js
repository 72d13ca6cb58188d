'use strict';

// The inbox page in a real browser: Debian's Chromium, headless, driven by
// puppeteer-core, against server.js and the cluster that scripts/test.sh
// starts (PGHOST, PGPORT from the environment).  Alice signs in on two
// tabs and Bob on a third (separate browser contexts, so separate cookie
// jars); notifications are created in SQL.  A screenshot of Alice's page
// is saved as <run dir>/inbox-web.png.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const pg = require('pg');
const puppeteer = require('puppeteer-core');

const EXAMPLE_DIR = path.resolve(__dirname, '..');
const REPO_DIR = path.resolve(EXAMPLE_DIR, '..', '..');
const RUN_DIR = process.env.NOTIFY_EXT_RUN_DIR || path.join(REPO_DIR, '.run');
const HOST = process.env.PGHOST || path.join(RUN_DIR, 'sock');
const PORT = Number(process.env.PGPORT || process.env.NOTIFY_EXT_PORT || 5432);
const CHROMIUM = process.env.NOTIFY_EXT_CHROMIUM || '/usr/bin/chromium';

const DB = 'notify_ext_e2e_inbox_web';
const APP_ROLE = 'inbox_web_test_app';
const LOGIN_ROLE = 'inbox_web_test';

let db;
let server;
let baseUrl;
let browser;
let userDataDir;
const serverLog = [];
const pages = {};

async function admin(sql) {
  const c = new pg.Client({ host: HOST, port: PORT, user: 'postgres', database: 'postgres' });
  await c.connect();
  try {
    for (const s of [].concat(sql)) await c.query(s);
  } finally {
    await c.end();
  }
}

async function notify(recipient, message, type = 'NOTE') {
  const r = await db.query('SELECT notify_ext.create_notification($1, $2, $3) AS id', [recipient, type, message]);
  return Number(r.rows[0].id);
}

function startServer() {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(EXAMPLE_DIR, 'server.js')], {
      env: {
        ...process.env,
        PGHOST: HOST,
        PGPORT: String(PORT),
        PGUSER: LOGIN_ROLE,
        PGDATABASE: DB,
        INBOX_WEB_PORT: '0',
        INBOX_WEB_HOST: '127.0.0.1',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const timer = setTimeout(() => reject(new Error(`the server did not start:\n${serverLog.join('')}`)), 15000);
    const onData = (chunk) => {
      serverLog.push(chunk.toString());
      const m = /listening on (http:\/\/\S+?)\/?$/m.exec(serverLog.join(''));
      if (m) {
        clearTimeout(timer);
        resolve({ child, url: m[1] });
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', (chunk) => serverLog.push(chunk.toString()));
    child.on('exit', (code) => reject(new Error(`the server exited with ${code}:\n${serverLog.join('')}`)));
  });
}

/** A tab signed in as user, in browser context ctx, with its page live. */
async function signIn(ctx, user) {
  const page = await ctx.newPage();
  page.on('pageerror', (err) => serverLog.push(`[${user} page error] ${err.message}\n`));
  // Everything the page ever shows, for "never" assertions.
  await page.evaluateOnNewDocument(() => {
    window.__shown = [];
    new MutationObserver((records) => {
      for (const r of records) for (const n of r.addedNodes) window.__shown.push(n.textContent || '');
    }).observe(document, { childList: true, subtree: true, characterData: true });
  });
  await page.setViewport({ width: 900, height: 700 });
  await page.goto(baseUrl + '/');
  // A second tab of the same browser context shares the first one's cookie.
  if (await page.$('form[action="/signin"]')) {
    await page.type('#user', user);
    await Promise.all([page.waitForNavigation(), page.click('form[action="/signin"] button[type="submit"]')]);
  }
  assert.equal(await page.$eval('#user', (e) => e.textContent), user);
  await page.waitForSelector('#status[data-live="live"]', { timeout: 5000 });
  return page;
}

const badgeOf = (page) => page.$eval('#badge', (b) => (b.hidden ? 0 : Number(b.textContent)));
const idsOn = (page) => page.$$eval('#list li', (lis) => lis.map((li) => Number(li.dataset.id)));
// Polling on a timer: requestAnimationFrame, puppeteer's default, does not
// run in a tab that is not in front.
const waitFn = (page, fn, timeout, ...args) => page.waitForFunction(fn, { timeout, polling: 50 }, ...args);
const waitBadge = (page, n, timeout = 2000) =>
  waitFn(page, (want) => {
    const b = document.getElementById('badge');
    return (b.hidden ? 0 : Number(b.textContent)) === want;
  }, timeout, n);

/** Clicks in page, brought to the front first, as a user would. */
async function click(page, selector) {
  await page.bringToFront();
  await page.click(selector);
}

before(async () => {
  await admin([
    `DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`,
    `DROP ROLE IF EXISTS ${LOGIN_ROLE}`,
    `DROP ROLE IF EXISTS ${APP_ROLE}`,
    `CREATE DATABASE ${DB}`,
    `CREATE ROLE ${APP_ROLE} NOLOGIN`,
    `CREATE ROLE ${LOGIN_ROLE} LOGIN IN ROLE ${APP_ROLE}`,
    `ALTER DATABASE ${DB} SET notify_ext.app_role = '${APP_ROLE}'`,
  ]);
  db = new pg.Client({ host: HOST, port: PORT, user: 'postgres', database: DB });
  await db.connect();
  await db.query('CREATE EXTENSION notify_ext');
  ({ child: server, url: baseUrl } = await startServer());

  userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'inbox-web-chromium-'));
  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: false, // --headless is among the arguments below
    userDataDir,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-dev-shm-usage',
    ],
    timeout: 30000,
    protocolTimeout: 60000,
  });
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  if (userDataDir) fs.rmSync(userDataDir, { recursive: true, force: true });
  if (server) {
    const exited = new Promise((resolve) => server.once('exit', resolve));
    server.kill('SIGTERM');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
    server.kill('SIGKILL');
  }
  if (db) await db.end().catch(() => {});
  await admin([
    `DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`,
    `DROP ROLE IF EXISTS ${LOGIN_ROLE}`,
    `DROP ROLE IF EXISTS ${APP_ROLE}`,
  ]).catch(() => {});
  if (process.exitCode) console.log(serverLog.join(''));
});

describe('inbox page', () => {
  it('signs in alice on two tabs and bob on a third, labelled as a demo', async () => {
    const aliceCtx = await browser.createBrowserContext();
    const bobCtx = await browser.createBrowserContext();
    pages.alice1 = await signIn(aliceCtx, 'alice');
    pages.alice2 = await signIn(aliceCtx, 'alice');
    pages.bob = await signIn(bobCtx, 'bob');
    for (const [name, page] of Object.entries(pages)) {
      const notice = await page.$eval('.demo-notice', (e) => e.textContent);
      assert.match(notice, /Demo sign-in/, `${name}: no demo notice`);
      assert.match(notice, /real authentication/);
      assert.equal(await badgeOf(page), 0);
      assert.deepEqual(await idsOn(page), []);
    }
    assert.equal(await pages.bob.$eval('#user', (e) => e.textContent), 'bob');
  });

  it('shows alice\'s new notification in both her tabs within one second', async () => {
    const sent = Date.now();
    const id = await notify('alice', 'Your export is ready', 'EXPORT_DONE');
    await Promise.all([pages.alice1, pages.alice2].map((p) =>
      p.waitForSelector(`#list li[data-id="${id}"]`, { timeout: 1000 })));
    const elapsed = Date.now() - sent;
    assert.ok(elapsed < 1000, `took ${elapsed} ms`);
    for (const page of [pages.alice1, pages.alice2]) {
      await waitBadge(page, 1, 500);
      const text = await page.$eval(`#list li[data-id="${id}"] .message`, (e) => e.textContent);
      assert.equal(text, 'Your export is ready');
    }
    pages.firstId = id;
  });

  it('clears the badge in the other tab when one marks it read', async () => {
    const id = pages.firstId;
    await click(pages.alice1, `#list li[data-id="${id}"] button.mark-read`);
    await waitBadge(pages.alice2, 0);
    await waitBadge(pages.alice1, 0);
    await waitFn(pages.alice2,
      (i) => !document.querySelector(`#list li[data-id="${i}"]`).classList.contains('unread'), 2000, id);
    const row = await db.query('SELECT read FROM notify_ext.notifications WHERE id = $1', [id]);
    assert.equal(row.rows[0].read, true);
  });

  it('renders messages as text, newest first, and marks all as read', async () => {
    const evil = '<img src=x onerror="window.__pwned = 1"><script>window.__pwned = 2</script>';
    const a = await notify('alice', evil, 'XSS<b>');
    const b = await notify('alice', 'Second & last "quoted" \'text\'');
    for (const page of [pages.alice1, pages.alice2]) {
      await page.waitForSelector(`#list li[data-id="${b}"]`, { timeout: 2000 });
      await page.waitForSelector(`#list li[data-id="${a}"]`, { timeout: 2000 });
      await waitBadge(page, 2);
      assert.deepEqual(await idsOn(page), [b, a, pages.firstId]);
      assert.equal(await page.$eval(`#list li[data-id="${a}"] .message`, (e) => e.textContent), evil);
      assert.equal(await page.$eval(`#list li[data-id="${a}"] .type`, (e) => e.textContent), 'XSS<b>');
      assert.equal(await page.$$eval('#list img, #list script, #list b', (n) => n.length), 0);
      assert.equal(await page.evaluate(() => window.__pwned), undefined);
    }
    await click(pages.alice2, '#mark-all');
    await waitBadge(pages.alice1, 0);
    await waitFn(pages.alice1, () => document.querySelectorAll('#list li.unread').length === 0, 2000);
  });

  it('loads the list in a new tab, newest first', async () => {
    const page = await pages.alice1.browserContext().newPage();
    await page.goto(baseUrl + '/');
    await page.waitForSelector('#status[data-live="live"]', { timeout: 5000 });
    assert.deepEqual(await idsOn(page), await idsOn(pages.alice1));
    assert.equal(await badgeOf(page), 0);
    await page.close();
  });

  it('never shows alice\'s notifications to bob', async () => {
    const id = await notify('bob', 'Only for bob');
    await pages.bob.waitForSelector(`#list li[data-id="${id}"]`, { timeout: 2000 });
    await waitBadge(pages.bob, 1);
    assert.deepEqual(await idsOn(pages.bob), [id]);
    const alices = (await db.query("SELECT message FROM notify_ext.notifications WHERE recipient = 'alice'")).rows
      .map((r) => r.message);
    assert.equal(alices.length, 3);
    const shown = (await pages.bob.evaluate(() => window.__shown)).join('\n');
    for (const m of alices) assert.ok(!shown.includes(m), `bob saw ${JSON.stringify(m)}`);
    // Bob's API answers hold only his own, and alice's tabs never got his.
    const api = await pages.bob.evaluate(async () => (await fetch('/api/notifications')).json());
    assert.deepEqual(api.items.map((n) => n.id), [id]);
    for (const page of [pages.alice1, pages.alice2]) {
      assert.ok(!(await page.evaluate(() => window.__shown)).join('\n').includes('Only for bob'));
    }
  });

  it('saves a screenshot of the page', async () => {
    await notify('alice', 'Dataset "Sales 2025" was shared with you', 'PERMISSION_GRANTED');
    await waitBadge(pages.alice1, 1);
    fs.mkdirSync(RUN_DIR, { recursive: true });
    const file = path.join(RUN_DIR, 'inbox-web.png');
    await pages.alice1.bringToFront();
    await pages.alice1.screenshot({ path: file, fullPage: true });
    assert.ok(fs.statSync(file).size > 10000);
  });
});

describe('inbox server', () => {
  async function cookieFor(user) {
    const r = await fetch(baseUrl + '/signin', {
      method: 'POST',
      body: new URLSearchParams({ user }),
      redirect: 'manual',
    });
    assert.equal(r.status, 303);
    return r.headers.get('set-cookie').split(';')[0];
  }

  it('refuses requests without a valid session', async () => {
    assert.equal((await fetch(baseUrl + '/api/notifications')).status, 401);
    assert.equal((await fetch(baseUrl + '/events')).status, 401);
    const cookie = await cookieFor('alice');
    const [name, value] = cookie.split('=');
    const parts = value.split('.');
    parts[0] = Buffer.from('bob').toString('base64url'); // alice's signature, bob's name
    const forged = `${name}=${parts.join('.')}`;
    assert.equal((await fetch(baseUrl + '/api/notifications', { headers: { cookie: forged } })).status, 401);
    assert.equal((await fetch(baseUrl + '/api/notifications', { headers: { cookie } })).status, 200);
  });

  it('refuses state changes without the CSRF token or from another origin', async () => {
    const cookie = await cookieFor('alice');
    const post = (headers) => fetch(baseUrl + '/api/read-all', { method: 'POST', headers: { cookie, ...headers } });
    assert.equal((await post({})).status, 403);
    assert.equal((await post({ 'x-csrf-token': 'nope' })).status, 403);
    const page = await (await fetch(baseUrl + '/', { headers: { cookie } })).text();
    const token = /name="csrf-token" content="([^"]+)"/.exec(page)[1];
    assert.equal((await post({ 'x-csrf-token': token, origin: 'http://evil.example' })).status, 403);
    assert.equal((await post({ 'x-csrf-token': token })).status, 200);
  });

  it('refuses bad user names and escapes the one it shows', async () => {
    for (const bad of ['', ' padded', 'a'.repeat(65), 'tab\there']) {
      const r = await fetch(baseUrl + '/signin', { method: 'POST', body: new URLSearchParams({ user: bad }), redirect: 'manual' });
      assert.equal(r.status, 400, JSON.stringify(bad));
    }
    const cookie = await cookieFor('<i>eve</i>');
    const page = await (await fetch(baseUrl + '/', { headers: { cookie } })).text();
    assert.ok(page.includes('&lt;i&gt;eve&lt;/i&gt;'));
    assert.ok(!page.includes('<i>eve</i>'));
  });
});
