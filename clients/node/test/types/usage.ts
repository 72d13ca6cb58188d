// Compiled (never run) by test/types.test.js: the declarations in
// index.d.ts must accept what the README shows and reject misuse.

import { Backoff, Consumer, Inbox, Message, Notification, isConnectionLost } from '../..';

async function main(): Promise<void> {
  const consumer = new Consumer({
    connection: 'postgres:///app',
    consumer: '5f0c3a52-8a0e-4a55-9d68-0a4c29a7d1a3',
    batchSize: 50,
    backoff: { initial: 100, maximum: 5000 },
  });
  consumer.on('reconnecting', (err: Error, delay: number) => console.warn(err.message, delay));
  await consumer.run(async (batch: Message[]) => {
    for (const m of batch) {
      const seq: number = m.seq;
      const op: string = m.operation;
      const id: string | null = m.resourceId;
      console.log(seq, op, id, m.event.payload, m.deliveryCount);
    }
  });
  const info: Record<string, unknown> = await consumer.info();
  console.log(info);
  await consumer.close();

  const inbox = new Inbox({ connection: { host: '/run/postgresql', database: 'app' }, principal: 'alice', backoff: new Backoff() });
  for await (const n of inbox) {
    const note: Notification = n;
    const when: Date = note.ts;
    console.log(note.id, note.type, note.message, when.toISOString());
    break;
  }
  const count: number = await inbox.unreadCount();
  const failed: number[] = await inbox.markAsRead([1, 2]);
  console.log(count, failed, isConnectionLost(new Error('x')));
  await inbox.close();

  // @ts-expect-error: the consumer id is required
  new Consumer({ connection: 'postgres:///app' });
  // @ts-expect-error: a handler takes a batch, not a single message
  await consumer.run((m: Message, extra: number) => extra);
}

void main;
