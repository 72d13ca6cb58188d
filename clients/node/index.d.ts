// Type declarations for notify-ext-client.

import { EventEmitter } from 'node:events';

/** A connection string, or a pg (node-postgres) client configuration. */
export type Connection =
  | string
  | {
      connectionString?: string;
      host?: string;
      port?: number;
      user?: string;
      password?: string | (() => string | Promise<string>);
      database?: string;
      ssl?: unknown;
      application_name?: string;
      connectionTimeoutMillis?: number;
      [option: string]: unknown;
    };

export interface BackoffOptions {
  /** The first delay, in ms (default 100). */
  initial?: number;
  /** The longest delay, in ms (default 10000). */
  maximum?: number;
  /** How much each delay grows (default 2). */
  multiplier?: number;
}

/** Capped exponential backoff with jitter: the n-th delay is drawn from [d/2, d], d = min(maximum, initial * multiplier^n). */
export class Backoff {
  constructor(options?: BackoffOptions);
  readonly initial: number;
  readonly maximum: number;
  readonly multiplier: number;
  attempt: number;
  /** The delay before the next attempt, in ms. */
  next(): number;
  /** Starts over from `initial`. */
  reset(): void;
}

export interface ClientOptions {
  /** Where to connect. */
  connection: Connection;
  /** When the connecting role is a member of notify_ext.app_role: the end user to act for. */
  principal?: string | null;
  /** false: poll (or long-poll) instead of LISTENing on a second connection. Default true. */
  listen?: boolean;
  /** Reconnection delays: a Backoff, or options for one. */
  backoff?: Backoff | BackoffOptions;
  /** Give up (rejecting with the connection error) after this many ms without a connection; default: never. */
  maxReconnectTime?: number | null;
}

declare class BaseClient extends EventEmitter {
  /** How many times the connections were lost and made again. */
  readonly reconnects: number;
  readonly closed: boolean;
  /** Makes the running loop (or the next one) return at its next safe point. */
  stop(): void;
  /** Closes both connections; the object cannot be used afterwards. */
  close(): Promise<void>;

  on(event: 'reconnecting', listener: (error: Error, delayMs: number) => void): this;
  on(event: 'reconnected', listener: () => void): this;
  on(event: 'warning', listener: (error: Error) => void): this;
  on(event: string | symbol, listener: (...args: any[]) => void): this;
}

/** The event JSON of the contract. */
export interface Event {
  seq: number;
  stream: string;
  operation: string;
  resource: { id: string; variant: string; path: string[] } | null;
  occurred_at: string;
  actor: string;
  payload: Record<string, unknown>;
  changed?: string[];
}

/** One delivery of an event. */
export class Message {
  readonly seq: number;
  readonly event: Event;
  /** 1 on the first delivery, more on redeliveries. */
  readonly deliveryCount: number;
  readonly reply: string;
  readonly salt: string;
  readonly hmac: string;
  readonly stream: string;
  readonly operation: string;
  readonly payload: Record<string, unknown>;
  readonly resourceId: string | null;
  /** The object acknowledge_message_batch() takes for this message. */
  ackToken(): { reply: string; salt: string; hmac: string };
}

export interface ConsumerOptions extends ClientOptions {
  /** The consumer's id (from create_stream_consumer()). */
  consumer: string;
  /** The most messages per batch, 1 to 10000 (default 100). */
  batchSize?: number;
  /** ms to wait for a wake-up before fetching anyway; the long poll's wait without LISTEN (default 10000). */
  pollInterval?: number;
}

export type BatchHandler = (batch: Message[]) => unknown | Promise<unknown>;

/** Drains a stream consumer: fetch, hand the batch to the handler, acknowledge when it resolves. */
export class Consumer extends BaseClient {
  constructor(options: ConsumerOptions);
  readonly consumerId: string;
  readonly batchSize: number;
  readonly pollInterval: number;
  /** Resolves after stop() (or, with untilIdle, when a fetch comes back empty); rejects with the handler's error. */
  run(handler: BatchHandler, options?: { untilIdle?: boolean }): Promise<void>;
  /** Handles everything there is now, then resolves. */
  drain(handler: BatchHandler): Promise<void>;
  /** One batch, not acknowledged. */
  fetch(options?: { wait?: number }): Promise<Message[]>;
  /** Resolves to how many were newly acknowledged. */
  acknowledge(messages: Message[]): Promise<number>;
  /** consumer_info(). */
  info(): Promise<Record<string, unknown>>;
}

/** A personal notification, in the item shape of list_notifications(). */
export class Notification {
  readonly id: number;
  readonly type: string;
  readonly message: string;
  readonly meta: Record<string, unknown> | null;
  readonly ts: Date;
  readonly read: boolean;
}

export interface InboxOptions extends ClientOptions {
  /** Mark each yielded notification read once the loop body is done (default true). */
  markRead?: boolean;
  /** Yield unread notifications already there, and again after a reconnection (default true). */
  catchUp?: boolean;
  /** Without LISTEN: ms between looks for unread notifications (default 5000). */
  pollInterval?: number;
}

export interface NotificationList {
  itemsInTotal: number;
  itemsPerPage: number;
  pageNumber: number;
  items: Array<{
    id: number;
    type: string;
    message: string;
    meta: Record<string, unknown> | null;
    ts: string;
    read: boolean;
  }>;
}

/** The calling principal's notifications, live. */
export class Inbox extends BaseClient implements AsyncIterable<Notification> {
  constructor(options: InboxOptions);
  readonly markRead: boolean;
  readonly catchUp: boolean;
  [Symbol.asyncIterator](): AsyncGenerator<Notification, void, undefined>;
  /** Ends after stop(), or when nothing came for idleTimeout ms. */
  notifications(options?: { idleTimeout?: number | null }): AsyncGenerator<Notification, void, undefined>;
  get(id: number): Promise<Notification>;
  list(options?: { type?: string | null; since?: Date | string | null; itemsPerPage?: number; page?: number }): Promise<NotificationList>;
  unreadCount(): Promise<number>;
  /** Resolves to the ids that are unknown or not the principal's. */
  markAsRead(ids: number[]): Promise<number[]>;
  /** Resolves to how many were unread. */
  markAllAsRead(): Promise<number>;
}

/** True when an error means the server went away, so that reconnecting is the remedy. */
export function isConnectionLost(error: unknown): boolean;
