'use strict';

// A live inbox page for notify_ext, on Node's own http module and pg.
//
// The server connects to PostgreSQL as the application role (a member of
// the role named by notify_ext.app_role) and acts for the signed-in user
// with SET LOCAL notify_ext.principal inside one transaction per request.
// One LISTEN connection serves every user: each user's channel comes from
// notify_ext.subscription_channel(), computed as that user, and a
// notification {"id": n} on it is fetched with get_notification(n), as that
// user, and pushed to the user's open pages over Server-Sent Events.
//
// The sign-in is a demo: anyone can pick any user name on a form, and the
// name is kept in an HMAC-signed cookie.  It stands in for real
// authentication, which an application would put in its place.
//
// Configuration (environment):
//   PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSWORD  the database, as libpq
//                                 (PGUSER: the application's login role)
//   INBOX_WEB_HOST                address to listen on (default 127.0.0.1)
//   INBOX_WEB_PORT                port (default 8080; 0 picks a free one)
//   INBOX_WEB_SECRET              key for the session cookies (default: a
//                                 random one per start, which signs
//                                 everyone out on a restart)

const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const pg = require('pg');

const SESSION_COOKIE = 'inbox_session';
const SESSION_MAX_AGE = 12 * 3600; // seconds
const HEARTBEAT_MS = 15000;
const PAGE_SIZE = 50;
const MAX_BODY = 16 * 1024;

const STATIC_FILES = {
  '/static/app.js': 'text/javascript; charset=utf-8',
  '/static/style.css': 'text/css; charset=utf-8',
};

// ------------------------------------------------------------------ helpers

/** Escapes text for HTML element content and quoted attribute values. */
function escapeHtml(value) {
  return String(value).replace(/[&<>"']/g, (c) => ({
    '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
  })[c]);
}

/** A user name the demo sign-in accepts: 1 to 64 printable characters. */
function validUserName(name) {
  return typeof name === 'string' && name.length >= 1 && name.length <= 64 &&
    !/[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/u.test(name) && name.trim() === name;
}

function parseCookies(header) {
  const out = {};
  for (const part of (header || '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0) out[part.slice(0, eq).trim()] = part.slice(eq + 1).trim();
  }
  return out;
}

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    let size = 0;
    const chunks = [];
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY) {
        reject(new HttpError(413, 'request body too large'));
        req.destroy();
      } else {
        chunks.push(chunk);
      }
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

// ------------------------------------------------------------------ sessions

/** The demo's signed cookies: "<base64url(user)>.<issued at>.<base64url(hmac)>". */
class Sessions {
  constructor(secret) {
    this.key = crypto.createHash('sha256').update(secret).digest();
  }

  _mac(label, data) {
    return crypto.createHmac('sha256', this.key).update(`${label}\n${data}`).digest('base64url');
  }

  issue(user) {
    const data = `${Buffer.from(user, 'utf8').toString('base64url')}.${Math.floor(Date.now() / 1000)}`;
    return `${data}.${this._mac('session', data)}`;
  }

  /** The user of a valid, unexpired cookie value, or null. */
  verify(value) {
    if (typeof value !== 'string') return null;
    const parts = value.split('.');
    if (parts.length !== 3) return null;
    const data = `${parts[0]}.${parts[1]}`;
    const expected = Buffer.from(this._mac('session', data));
    const given = Buffer.from(parts[2]);
    if (given.length !== expected.length || !crypto.timingSafeEqual(given, expected)) return null;
    const issued = Number(parts[1]);
    if (!Number.isInteger(issued) || Date.now() / 1000 - issued > SESSION_MAX_AGE) return null;
    const user = Buffer.from(parts[0], 'base64url').toString('utf8');
    return validUserName(user) ? user : null;
  }

  /** The token a page sends back with its POSTs (bound to its session). */
  csrfToken(cookieValue) {
    return this._mac('csrf', cookieValue);
  }

  checkCsrf(cookieValue, token) {
    if (typeof token !== 'string') return false;
    const expected = Buffer.from(this.csrfToken(cookieValue));
    const given = Buffer.from(token);
    return given.length === expected.length && crypto.timingSafeEqual(given, expected);
  }
}

// ------------------------------------------------------------------ database

class Inboxes {
  /**
   * @param {pg.PoolConfig} connection  the application role's connection
   * @param {(user: string, event: string, data: object) => void} push  sends to a user's pages
   * @param {() => void} resync  tells every page to load its list again
   */
  constructor(connection, push, resync, log) {
    this.pool = new pg.Pool({ ...connection, max: 5 });
    this.pool.on('error', (err) => log(`idle database connection lost: ${err.message}`));
    this.connection = connection;
    this.push = push;
    this.resync = resync;
    this.log = log;
    this.channels = new Map(); // user -> channel
    this.users = new Map(); // channel -> user
    this.listening = new Set(); // channels with a LISTEN in force
    this.listener = null;
    this.listenerReady = null;
    this.retryTimer = null;
    this.retryDelay = 100;
    this.closed = false;
  }

  /** Runs fn(client) in a transaction that acts for user. */
  async asUser(user, fn) {
    const client = await this.pool.connect();
    let broken = null;
    try {
      await client.query('BEGIN');
      await client.query(`SET LOCAL notify_ext.principal TO ${client.escapeLiteral(user)}`);
      const result = await fn(client);
      await client.query('COMMIT');
      return result;
    } catch (err) {
      await client.query('ROLLBACK').catch((e) => {
        broken = e;
      });
      throw err;
    } finally {
      client.release(broken || undefined);
    }
  }

  async list(user) {
    return this.asUser(user, async (c) => {
      const list = await c.query('SELECT notify_ext.list_notifications(items_per_page => $1) AS l', [PAGE_SIZE]);
      const unread = await c.query('SELECT notify_ext.unread_count() AS n');
      return { items: list.rows[0].l.items, total: list.rows[0].l.itemsInTotal, unread: Number(unread.rows[0].n) };
    });
  }

  async markAsRead(user, ids) {
    return this.asUser(user, async (c) => {
      const failed = await c.query('SELECT notify_ext.mark_as_read($1::bigint[]) AS f', [ids]);
      const unread = await c.query('SELECT notify_ext.unread_count() AS n');
      return { failed: (failed.rows[0].f || []).map(Number), unread: Number(unread.rows[0].n) };
    });
  }

  async markAllAsRead(user) {
    return this.asUser(user, async (c) => {
      const n = await c.query('SELECT notify_ext.mark_all_as_read() AS n');
      const unread = await c.query('SELECT notify_ext.unread_count() AS n');
      return { changed: n.rows[0].n, unread: Number(unread.rows[0].n) };
    });
  }

  // ---------------------------------------------------------------- LISTEN

  /** Starts listening for user's notifications (idempotent). */
  async subscribe(user) {
    let channel = this.channels.get(user);
    if (!channel) {
      channel = await this.asUser(user, async (c) => (await c.query('SELECT notify_ext.subscription_channel() AS ch')).rows[0].ch);
      this.channels.set(user, channel);
      this.users.set(channel, user);
    }
    const listener = await this._listener();
    if (!this.listening.has(channel)) {
      await listener.query(`LISTEN ${pg.escapeIdentifier(channel)}`);
      this.listening.add(channel);
    }
  }

  /** Stops listening for user (when their last page closed). */
  async unsubscribe(user) {
    const channel = this.channels.get(user);
    if (!channel || !this.listening.has(channel)) return;
    this.listening.delete(channel);
    const listener = this.listener;
    if (listener && !listener.broken) {
      await listener.query(`UNLISTEN ${pg.escapeIdentifier(channel)}`).catch(() => {});
    }
  }

  _listener() {
    if (this.closed) return Promise.reject(new Error('shutting down'));
    if (!this.listenerReady) this.listenerReady = this._connectListener();
    return this.listenerReady;
  }

  async _connectListener() {
    const client = new pg.Client(this.connection);
    client.broken = false;
    const lost = (err) => {
      if (client.broken) return;
      client.broken = true;
      if (this.listener === client) {
        this.listener = null;
        this.listenerReady = null;
      }
      if (!this.closed) {
        this.log(`LISTEN connection lost (${err ? err.message : 'closed'}); reconnecting`);
        this._scheduleReconnect();
      }
    };
    client.on('error', lost);
    client.on('end', () => lost(null));
    client.on('notification', (msg) => this._onNotification(msg));
    try {
      await client.connect();
    } catch (err) {
      client.broken = true;
      this.listenerReady = null;
      throw err;
    }
    this.listener = client;
    return client;
  }

  /** Reconnects the LISTEN connection with capped, jittered backoff. */
  _scheduleReconnect() {
    if (this.retryTimer || this.closed) return;
    const ceiling = this.retryDelay;
    this.retryDelay = Math.min(this.retryDelay * 2, 5000);
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.retryTimer = setTimeout(async () => {
      this.retryTimer = null;
      try {
        const client = await this._listener();
        const channels = [...this.listening];
        for (const channel of channels) await client.query(`LISTEN ${pg.escapeIdentifier(channel)}`);
        this.retryDelay = 100;
        this.log(`LISTEN connection back (${channels.length} channels)`);
        // Notifications that came while no one listened were not announced.
        this.resync();
      } catch (err) {
        this.log(`reconnecting failed: ${err.message}`);
        this._scheduleReconnect();
      }
    }, delay);
  }

  async _onNotification(msg) {
    const user = this.users.get(msg.channel);
    if (!user) return;
    let id;
    try {
      id = Number(JSON.parse(msg.payload).id);
    } catch {
      return;
    }
    if (!Number.isSafeInteger(id)) return;
    try {
      const data = await this.asUser(user, async (c) => {
        const item = await c.query('SELECT notify_ext.get_notification($1) AS n', [id]);
        const unread = await c.query('SELECT notify_ext.unread_count() AS n');
        return { notification: item.rows[0].n, unread: Number(unread.rows[0].n) };
      });
      this.push(user, 'notification', data);
    } catch (err) {
      if (err.code !== '42704') this.log(`fetching notification ${id}: ${err.message}`);
    }
  }

  async close() {
    this.closed = true;
    clearTimeout(this.retryTimer);
    const listener = this.listener;
    if (listener) {
      listener.broken = true;
      await listener.end().catch(() => {});
    }
    await this.pool.end().catch(() => {});
  }
}

// ------------------------------------------------------------------ pages

const SECURITY_HEADERS = {
  'Content-Security-Policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; " +
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'same-origin',
  'Cache-Control': 'no-store',
};

const DEMO_NOTICE =
  'anyone can pick any name here. It stands in for real authentication and must not be used as such.';

function layout(title, body, head = '') {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title>
<link rel="stylesheet" href="/static/style.css">
${head}
</head>
<body>
<div class="demo-notice" role="note"><strong>Demo sign-in:</strong> ${escapeHtml(DEMO_NOTICE)}</div>
${body}
</body>
</html>
`;
}

function signInPage(error) {
  return layout('Sign in: notify_ext inbox (demo)', `
<main class="signin">
  <h1>notify_ext inbox</h1>
  <form method="post" action="/signin">
    <label for="user">User name (demo: no password)</label>
    <input id="user" name="user" autocomplete="username" maxlength="64" required autofocus>
    <button type="submit">Sign in</button>
  </form>
  ${error ? `<p class="error" role="alert">${escapeHtml(error)}</p>` : ''}
</main>`);
}

function inboxPage(user, csrf) {
  return layout(`Inbox of ${user}: notify_ext (demo)`, `
<header>
  <h1>Inbox <span id="badge" class="badge" title="unread" hidden>0</span></h1>
  <div class="who">Signed in as <b id="user">${escapeHtml(user)}</b>
    <form method="post" action="/signout"><input type="hidden" name="csrf" value="${escapeHtml(csrf)}"><button type="submit">Sign out</button></form>
  </div>
</header>
<main>
  <div class="toolbar">
    <button id="mark-all" type="button">Mark all as read</button>
    <span id="status" data-live="connecting">connecting…</span>
  </div>
  <p id="empty" hidden>No notifications yet.</p>
  <ul id="list" aria-live="polite"></ul>
</main>`, `<meta name="csrf-token" content="${escapeHtml(csrf)}">
<script src="/static/app.js" defer></script>`);
}

// ------------------------------------------------------------------ server

/**
 * Creates the server (not yet listening).
 * @param {object} options
 * @param {pg.ClientConfig} [options.connection]  defaults to the PG* environment
 * @param {string|Buffer} [options.secret]  the cookie key
 * @param {(line: string) => void} [options.log]
 */
function createServer(options = {}) {
  const log = options.log || ((line) => console.log(`${new Date().toISOString()} ${line}`));
  const sessions = new Sessions(options.secret || crypto.randomBytes(32));
  const streams = new Map(); // user -> Set of open SSE responses

  function send(res, event, data) {
    res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  }

  function push(user, event, data) {
    for (const res of streams.get(user) || []) send(res, event, data);
  }

  function resync() {
    for (const set of streams.values()) for (const res of set) send(res, 'resync', {});
  }

  const inboxes = new Inboxes(options.connection || {}, push, resync, log);
  const staticDir = path.join(__dirname, 'static');
  const staticCache = new Map();

  function respond(res, status, type, body, headers = {}) {
    res.writeHead(status, { ...SECURITY_HEADERS, 'Content-Type': type, ...headers });
    res.end(body);
  }

  function json(res, status, data) {
    respond(res, status, 'application/json; charset=utf-8', JSON.stringify(data));
  }

  function redirect(res, location, headers = {}) {
    res.writeHead(303, { ...SECURITY_HEADERS, Location: location, ...headers });
    res.end();
  }

  function session(req) {
    const value = parseCookies(req.headers.cookie)[SESSION_COOKIE];
    const user = sessions.verify(value);
    return user ? { user, cookie: value } : null;
  }

  function cookieHeader(value, maxAge) {
    return `${SESSION_COOKIE}=${value}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${maxAge}`;
  }

  /** POSTs come from our own pages only. */
  function checkOrigin(req) {
    const origin = req.headers.origin;
    if (!origin) return;
    let host = null;
    try {
      host = new URL(origin).host;
    } catch {
      // "null" or garbage: refused below
    }
    if (host !== req.headers.host) throw new HttpError(403, 'cross-origin request refused');
  }

  function requireApiSession(req) {
    const s = session(req);
    if (!s) throw new HttpError(401, 'not signed in');
    return s;
  }

  function requireCsrf(req, s, token) {
    checkOrigin(req);
    if (!sessions.checkCsrf(s.cookie, token)) throw new HttpError(403, 'missing or wrong CSRF token');
  }

  async function events(req, res, user) {
    res.writeHead(200, {
      ...SECURITY_HEADERS,
      'Content-Type': 'text/event-stream; charset=utf-8',
      Connection: 'keep-alive',
      'X-Accel-Buffering': 'no',
    });
    res.write('retry: 2000\n\n');
    let set = streams.get(user);
    if (!set) streams.set(user, (set = new Set()));
    set.add(res);
    const heartbeat = setInterval(() => res.write(': keep-alive\n\n'), HEARTBEAT_MS);
    req.on('close', () => {
      clearInterval(heartbeat);
      set.delete(res);
      if (set.size === 0 && streams.get(user) === set) {
        streams.delete(user);
        inboxes.unsubscribe(user).catch(() => {});
      }
    });
    try {
      await inboxes.subscribe(user);
      // The page loads its list after this, so nothing falls between the
      // list and the first live notification.
      send(res, 'ready', {});
    } catch (err) {
      log(`subscribing ${JSON.stringify(user)}: ${err.message}`);
      send(res, 'failed', { error: 'the live connection is not available' });
      res.end();
    }
  }

  async function route(req, res) {
    const url = new URL(req.url, 'http://localhost');
    const p = url.pathname;

    if (req.method === 'GET' && STATIC_FILES[p]) {
      if (!staticCache.has(p)) staticCache.set(p, fs.readFileSync(path.join(staticDir, path.basename(p))));
      return respond(res, 200, STATIC_FILES[p], staticCache.get(p));
    }
    if (req.method === 'GET' && p === '/') {
      const s = session(req);
      if (!s) return respond(res, 200, 'text/html; charset=utf-8', signInPage());
      return respond(res, 200, 'text/html; charset=utf-8', inboxPage(s.user, sessions.csrfToken(s.cookie)));
    }
    if (req.method === 'POST' && p === '/signin') {
      checkOrigin(req);
      const user = new URLSearchParams(await readBody(req)).get('user');
      if (!validUserName(user)) {
        return respond(res, 400, 'text/html; charset=utf-8',
          signInPage('Pick a user name of 1 to 64 printable characters, without leading or trailing spaces.'));
      }
      return redirect(res, '/', { 'Set-Cookie': cookieHeader(sessions.issue(user), SESSION_MAX_AGE) });
    }
    if (req.method === 'POST' && p === '/signout') {
      const s = session(req);
      if (s) requireCsrf(req, s, new URLSearchParams(await readBody(req)).get('csrf'));
      return redirect(res, '/', { 'Set-Cookie': cookieHeader('', 0) });
    }
    if (req.method === 'GET' && p === '/events') {
      return events(req, res, requireApiSession(req).user);
    }
    if (req.method === 'GET' && p === '/api/notifications') {
      return json(res, 200, await inboxes.list(requireApiSession(req).user));
    }
    if (req.method === 'POST' && p === '/api/read') {
      const s = requireApiSession(req);
      requireCsrf(req, s, req.headers['x-csrf-token']);
      let ids;
      try {
        ids = JSON.parse(await readBody(req)).ids;
      } catch {
        throw new HttpError(400, 'expected JSON {"ids": [...]}');
      }
      if (!Array.isArray(ids) || ids.length === 0 || ids.length > 1000 || !ids.every(Number.isSafeInteger)) {
        throw new HttpError(400, 'ids must be a non-empty array of integers');
      }
      const result = await inboxes.markAsRead(s.user, ids);
      const marked = ids.filter((id) => !result.failed.includes(id));
      // Other pages of the same user learn it here: marking read sends
      // no notification of its own.
      push(s.user, 'read', { ids: marked, unread: result.unread });
      return json(res, 200, result);
    }
    if (req.method === 'POST' && p === '/api/read-all') {
      const s = requireApiSession(req);
      requireCsrf(req, s, req.headers['x-csrf-token']);
      const result = await inboxes.markAllAsRead(s.user);
      push(s.user, 'read', { all: true, unread: result.unread });
      return json(res, 200, result);
    }
    throw new HttpError(404, 'not found');
  }

  const server = http.createServer((req, res) => {
    route(req, res).catch((err) => {
      const status = err instanceof HttpError ? err.status : 500;
      if (status === 500) log(`${req.method} ${req.url}: ${err.stack || err}`);
      if (res.headersSent) {
        res.end();
      } else {
        json(res, status, { error: status === 500 ? 'internal error' : err.message });
      }
    });
  });

  const close = server.close.bind(server);
  server.close = (callback) => {
    for (const set of streams.values()) for (const res of set) res.end();
    streams.clear();
    close(() => inboxes.close().then(() => callback && callback()));
    server.closeAllConnections?.();
  };
  return server;
}

module.exports = { createServer, escapeHtml, validUserName, Sessions };

if (require.main === module) {
  const host = process.env.INBOX_WEB_HOST || '127.0.0.1';
  const port = Number(process.env.INBOX_WEB_PORT ?? 8080);
  const server = createServer({ secret: process.env.INBOX_WEB_SECRET });
  server.listen(port, host, () => {
    const addr = server.address();
    const shown = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
    console.log(`inbox-web listening on http://${shown}:${addr.port}/`);
  });
  const shutdown = () => server.close(() => process.exit(0));
  process.on('SIGINT', shutdown);
  process.on('SIGTERM', shutdown);
}
