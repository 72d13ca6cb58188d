'use strict';

// What Consumer and Inbox share: a working connection, a LISTEN connection,
// reconnection with backoff, stop() and close().

const { EventEmitter } = require('node:events');
const pg = require('pg');
const { Backoff } = require('./backoff');

/** Returned by a step that was ended by stop(). */
const STOPPED = Symbol('stopped');

// SQLSTATEs after which a reconnection can succeed: the server shutting
// down, crashing or starting up (class 08, connection exceptions, too).
const RETRYABLE_SQLSTATES = new Set(['57P01', '57P02', '57P03']);
// Errors of the socket itself.
const NETWORK_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ENOENT', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN',
]);

/**
 * True when err means that the server went away (or does not accept
 * connections yet), so that reconnecting is the remedy.
 */
function isConnectionLost(err) {
  if (!err || typeof err !== 'object') return false;
  if (err.connectionLost) return true;
  const code = err.code;
  if (typeof code === 'string') {
    if (code.startsWith('08') || RETRYABLE_SQLSTATES.has(code) || NETWORK_CODES.has(code)) return true;
    if (/^[0-9A-Z]{5}$/.test(code)) return false; // any other SQLSTATE is the caller's to see
  }
  return /Connection terminated|connection is closed|Client has encountered a connection error|not queryable/i.test(
    String(err.message),
  );
}

/** An error for a connection that is gone. */
function connectionLost(message, cause) {
  const err = new Error(message, cause ? { cause } : undefined);
  err.connectionLost = true;
  return err;
}

/**
 * A pg.Client that acts for `principal` (when given), whose loss is noticed
 * (`broken`) instead of crashing the process with an unhandled 'error'.
 */
async function connect(connection, principal, onLost) {
  const client = new pg.Client(connection);
  client.broken = false;
  const lost = (err) => {
    if (client.broken) return;
    client.broken = true;
    client.lostWith = err || connectionLost('the connection was closed');
    onLost(client.lostWith);
  };
  client.on('error', lost);
  client.on('end', () => lost(null));
  try {
    await client.connect();
    if (principal != null) {
      await client.query("SELECT set_config('notify_ext.principal', $1, false)", [principal]);
    }
  } catch (err) {
    client.broken = true;
    client.end().catch(() => {});
    throw err;
  }
  return client;
}

function endQuietly(client) {
  if (!client) return Promise.resolve();
  client.broken = true;
  return client.end().catch(() => {});
}

/**
 * The base of Consumer and Inbox.  Subclasses say which channel to LISTEN
 * on (_channel) and what to do after every (re)connection (_onConnect), and
 * handle notifications (_onNotification).
 *
 * Events: 'reconnecting' (err, delayMs) when the connection was lost and
 * the next attempt is scheduled, 'reconnected' when it is back.
 */
class BaseClient extends EventEmitter {
  constructor(options, what) {
    super();
    if (!options || options.connection == null) {
      throw new TypeError('options.connection (a connection string or pg client config) is required');
    }
    this.connection = options.connection;
    this.principal = options.principal ?? null;
    this.listen = options.listen ?? true;
    this.backoff = options.backoff instanceof Backoff ? options.backoff : new Backoff(options.backoff);
    this.maxReconnectTime = options.maxReconnectTime ?? null;
    /** How many times the connections were lost and made again. */
    this.reconnects = 0;
    this._what = what;
    this._conn = null;
    this._listener = null;
    this._everConnected = false;
    this._stopping = false;
    this._closed = false;
    this._running = false;
    this._wakeUp = null; // resolves the wait in progress
    this._woken = false; // a wake-up came while nothing waited
  }

  get closed() {
    return this._closed;
  }

  /**
   * Makes the loop that is running (or the next one) return at its next
   * safe point.
   */
  stop() {
    this._stopping = true;
    this._wake();
    this._onStop();
  }

  /** Closes both connections; the object cannot be used afterwards. */
  async close() {
    if (this._closed) return;
    this._closed = true;
    this.stop();
    await this._disconnect();
  }

  async _loop(body) {
    if (this._closed) throw new Error(`the ${this._what} is closed`);
    if (this._running) throw new Error(`the ${this._what} is already running a loop`);
    this._running = true;
    try {
      return await body();
    } finally {
      this._running = false;
      // A stop() that came before the loop started still ends it; once
      // the loop is over, it is used up.
      if (!this._closed) this._stopping = false;
    }
  }

  // -------------------------------------------------------------- waiting

  _wake() {
    if (this._wakeUp) {
      const resolve = this._wakeUp;
      this._wakeUp = null;
      resolve();
    } else {
      this._woken = true;
    }
  }

  /** Sleeps up to ms, or until a wake-up (notification, stop, lost connection). */
  _sleep(ms) {
    if (this._woken || this._stopping) {
      this._woken = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this._wakeUp = null;
        resolve();
      }, Math.max(0, ms));
      this._wakeUp = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  // -------------------------------------------------------------- connections

  async _channel() {
    return null;
  }

  async _onConnect() {}

  _onNotification() {}

  _onStop() {}

  _gaveUp() {}

  _describe() {
    return this._what;
  }

  /** The working connection, made if need be. */
  async _work() {
    if (!this._conn) await this._connect();
    if (this._conn.broken) throw connectionLost('the connection was lost', this._conn.lostWith);
    return this._conn;
  }

  _checkListener() {
    if (this._listener && this._listener.broken) {
      throw connectionLost('the LISTEN connection was lost', this._listener.lostWith);
    }
  }

  async _connect() {
    await this._disconnect();
    const conn = await connect(this.connection, this.principal, () => this._wake());
    this._conn = conn;
    if (this.listen) {
      const channel = await this._channel(conn);
      if (channel != null) {
        const listener = await connect(this.connection, null, () => this._wake());
        this._listener = listener;
        listener.on('notification', (msg) => {
          if (msg.channel === channel) {
            this._onNotification(msg.payload);
            this._wake();
          }
        });
        // LISTEN before anything is read: whatever commits later is announced.
        await listener.query(`LISTEN ${pg.escapeIdentifier(channel)}`);
      }
    }
    if (this._everConnected) {
      this.reconnects += 1;
      this.emit('reconnected');
    }
    this._everConnected = true;
    this.backoff.reset();
    await this._onConnect();
  }

  async _disconnect() {
    const conn = this._conn;
    const listener = this._listener;
    this._conn = null;
    this._listener = null;
    await Promise.all([endQuietly(conn), endQuietly(listener)]);
  }

  /**
   * Runs step, reconnecting and running it again while the server is
   * unreachable.  Returns STOPPED when stop() ended it.
   */
  async _withReconnect(step) {
    let lostSince = null;
    for (;;) {
      try {
        if (!this._conn) await this._connect();
        return await step();
      } catch (err) {
        if (this._stopping && err && err.stoppedByUs) return STOPPED;
        // A first connection that fails is a configuration problem more
        // often than not: say so at once.
        if (this._closed || !this._everConnected || !isConnectionLost(err)) throw err;
        await this._disconnect();
        const now = Date.now();
        if (lostSince === null) {
          lostSince = now;
        } else if (this.maxReconnectTime != null && now - lostSince > this.maxReconnectTime) {
          throw err;
        }
        if (!this._stopping) {
          const delay = this.backoff.next();
          this.emit('reconnecting', err, delay);
          await this._sleep(delay);
        }
        if (this._stopping) {
          this._gaveUp();
          return STOPPED;
        }
      }
    }
  }
}

module.exports = { BaseClient, STOPPED, isConnectionLost, connectionLost };
