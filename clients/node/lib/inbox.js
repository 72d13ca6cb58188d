'use strict';

// A principal's inbox, live.

const { BaseClient, STOPPED } = require('./client');

// How many yielded ids are remembered, so that one announced twice (live,
// and by a catch-up after a reconnection) is yielded once.
const SEEN_MAX = 10000;

/** A personal notification, in the item shape of list_notifications(). */
class Notification {
  constructor(item) {
    this.id = Number(item.id);
    this.type = item.type;
    this.message = item.message;
    this.meta = item.meta ?? null;
    this.ts = new Date(item.ts);
    this.read = Boolean(item.read);
  }
}

/**
 * The calling principal's notifications, live.
 *
 * Iterating (`for await (const n of inbox)`) yields each new notification as
 * it is created: the inbox LISTENs on the principal's channel
 * (notify_ext.subscription_channel()) on a dedicated connection and fetches
 * each announced id with notify_ext.get_notification().  With `catchUp` (the
 * default) it first yields the unread notifications already there, oldest
 * first, and does so again after a reconnection.
 *
 * With `markRead` (the default) a notification is marked read once the loop
 * body that received it has finished, i.e. when the next one is asked for.
 * A loop left by break or an exception leaves it unread; it comes first
 * next time.
 */
class Inbox extends BaseClient {
  constructor(options) {
    super(options, 'inbox');
    const { markRead = true, catchUp = true, pollInterval = 5000 } = options;
    if (!(pollInterval > 0)) throw new RangeError(`pollInterval must be positive, not ${pollInterval}`);
    if (!this.listen && !catchUp) {
      throw new RangeError('an inbox that does not listen finds notifications by catching up');
    }
    this.markRead = markRead;
    this.catchUp = catchUp;
    this.pollInterval = pollInterval;
    this._pending = [];
    this._seen = new Set();
    this._needsCatchUp = true;
  }

  _describe() {
    return this.principal ? `inbox of ${this.principal}` : 'inbox';
  }

  [Symbol.asyncIterator]() {
    return this.notifications();
  }

  /**
   * Yields notifications as they come.  Ends after stop(), or when nothing
   * came for `idleTimeout` ms.
   */
  async *notifications({ idleTimeout = null } = {}) {
    if (this._closed) throw new Error('the inbox is closed');
    if (this._running) throw new Error('the inbox is already running a loop');
    this._running = true;
    try {
      while (!this._stopping) {
        const deadline = idleTimeout == null ? null : Date.now() + idleTimeout;
        const item = await this._withReconnect(() => this._next(deadline));
        if (item === STOPPED || item === null) return;
        let handled = false;
        try {
          yield item;
          handled = true;
        } finally {
          if (!handled) {
            // Left by break or an exception: it stays unread and comes
            // first next time.
            this._seen.delete(item.id);
            this._pending.unshift(item.id);
          }
        }
        if (this.markRead) {
          const r = await this._withReconnect(() => this._mark([item.id]));
          if (r === STOPPED) {
            this._seen.delete(item.id);
            return;
          }
        }
      }
    } finally {
      this._running = false;
      if (!this._closed) this._stopping = false;
    }
  }

  /** get_notification(): rejects with code 42704 for an unknown id or someone else's. */
  async get(id) {
    return this._withReconnect(() => this._get(id));
  }

  /** list_notifications(): {itemsInTotal, itemsPerPage, pageNumber, items}, newest first. */
  async list({ type = null, since = null, itemsPerPage = 50, page = 0 } = {}) {
    return this._withReconnect(async () => {
      const conn = await this._work();
      const r = await conn.query('SELECT notify_ext.list_notifications($1, $2, $3, $4) AS list', [
        type,
        since,
        itemsPerPage,
        page,
      ]);
      return r.rows[0].list;
    });
  }

  /** unread_count(). */
  async unreadCount() {
    return this._withReconnect(async () => {
      const conn = await this._work();
      const r = await conn.query('SELECT notify_ext.unread_count() AS n');
      return Number(r.rows[0].n);
    });
  }

  /** mark_as_read(): resolves to the ids that are unknown or not the principal's. */
  async markAsRead(ids) {
    return this._withReconnect(() => this._mark(ids));
  }

  /** mark_all_as_read(): how many were unread. */
  async markAllAsRead() {
    return this._withReconnect(async () => {
      const conn = await this._work();
      const r = await conn.query('SELECT notify_ext.mark_all_as_read() AS n');
      return r.rows[0].n;
    });
  }

  // -------------------------------------------------------------- internals

  async _channel(conn) {
    const r = await conn.query('SELECT notify_ext.subscription_channel() AS channel');
    return r.rows[0].channel;
  }

  async _onConnect() {
    // Announcements sent while no one listened are lost: look again.
    this._needsCatchUp = true;
  }

  _onNotification(payload) {
    try {
      const id = Number(JSON.parse(payload).id);
      if (Number.isSafeInteger(id)) this._enqueue([id]);
    } catch {
      // not an announcement
    }
  }

  async _get(id) {
    const conn = await this._work();
    const r = await conn.query('SELECT notify_ext.get_notification($1) AS item', [id]);
    return new Notification(r.rows[0].item);
  }

  async _mark(ids) {
    const conn = await this._work();
    const r = await conn.query('SELECT notify_ext.mark_as_read($1::bigint[]) AS failed', [ids]);
    return (r.rows[0].failed || []).map(Number);
  }

  _enqueue(ids) {
    for (const id of ids) {
      if (!this._seen.has(id) && !this._pending.includes(id)) this._pending.push(id);
    }
  }

  async _lookForUnread() {
    const conn = await this._work();
    const r = await conn.query(
      'SELECT id FROM notify_ext.get_personal_notifications() WHERE NOT read ORDER BY ts, id',
    );
    this._enqueue(r.rows.map((row) => Number(row.id)));
  }

  async _next(deadline) {
    if (this._needsCatchUp) {
      this._needsCatchUp = false;
      if (this.catchUp) await this._lookForUnread();
    }
    while (!this._stopping) {
      while (this._pending.length > 0) {
        const id = this._pending[0];
        let item = null;
        try {
          item = await this._get(id);
        } catch (err) {
          if (err.code !== '42704') throw err; // 42704: deleted or acknowledged meanwhile
        }
        this._pending.shift();
        if (item === null || item.read) continue;
        this._seen.add(id);
        if (this._seen.size > SEEN_MAX) this._seen.delete(this._seen.values().next().value);
        return item;
      }
      const left = deadline === null ? this.pollInterval : deadline - Date.now();
      if (left <= 0) return null;
      if (!this._listener) {
        await this._sleep(Math.min(left, this.pollInterval));
        if (!this._stopping) await this._lookForUnread();
        continue;
      }
      this._checkListener();
      await this._sleep(left);
      this._checkListener();
    }
    return STOPPED;
  }
}

module.exports = { Inbox, Notification };
