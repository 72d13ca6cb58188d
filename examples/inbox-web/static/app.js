'use strict';

// The inbox page: loads the list, then keeps it current from the server's
// Server-Sent Events.  Every piece of a notification is put on the page as
// text (textContent), never as HTML: messages are user data.

(() => {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const list = document.getElementById('list');
  const badge = document.getElementById('badge');
  const empty = document.getElementById('empty');
  const status = document.getElementById('status');
  const markAll = document.getElementById('mark-all');
  const items = new Map(); // id -> notification

  const timeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });

  function setStatus(state, text) {
    status.dataset.live = state;
    status.textContent = text;
  }

  function setUnread(n) {
    badge.textContent = String(n);
    badge.hidden = n === 0;
    document.title = `${n > 0 ? `(${n}) ` : ''}Inbox of ${document.getElementById('user').textContent}`;
    markAll.disabled = n === 0;
  }

  function el(tag, className, text) {
    const e = document.createElement(tag);
    if (className) e.className = className;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function render(n) {
    const li = el('li', n.read ? 'notification' : 'notification unread');
    li.dataset.id = String(n.id);
    const head = el('div', 'head');
    head.append(el('span', 'type', n.type));
    const time = el('time', 'ts', timeFormat.format(new Date(n.ts)));
    time.dateTime = n.ts;
    head.append(time);
    li.append(head, el('p', 'message', n.message));
    if (!n.read) {
      const button = el('button', 'mark-read', 'Mark as read');
      button.type = 'button';
      button.addEventListener('click', () => markRead([n.id]));
      li.append(button);
    }
    return li;
  }

  // Newest first: by ts, then id, as list_notifications() orders them.
  function newer(a, b) {
    return a.ts !== b.ts ? a.ts > b.ts : a.id > b.id;
  }

  function upsert(n) {
    items.set(n.id, n);
    const li = render(n);
    const old = list.querySelector(`li[data-id="${n.id}"]`);
    if (old) {
      old.replaceWith(li);
    } else {
      let before = null;
      for (const child of list.children) {
        if (newer(n, items.get(Number(child.dataset.id)))) {
          before = child;
          break;
        }
      }
      list.insertBefore(li, before);
    }
    empty.hidden = items.size > 0;
  }

  function markedRead(ids) {
    for (const id of ids) {
      const n = items.get(id);
      if (n && !n.read) upsert({ ...n, read: true });
    }
  }

  async function load() {
    const r = await fetch('/api/notifications', { credentials: 'same-origin' });
    if (r.status === 401) return location.reload();
    if (!r.ok) throw new Error(`loading the inbox failed (${r.status})`);
    const data = await r.json();
    items.clear();
    list.replaceChildren();
    for (const n of data.items.slice().reverse()) upsert(n);
    empty.hidden = items.size > 0;
    setUnread(data.unread);
  }

  async function post(url, body) {
    const r = await fetch(url, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrf },
      body: JSON.stringify(body || {}),
    });
    if (r.status === 401) return location.reload();
    if (!r.ok) throw new Error(`${url} failed (${r.status})`);
    return r.json();
  }

  async function markRead(ids) {
    const result = await post('/api/read', { ids });
    markedRead(ids.filter((id) => !result.failed.includes(id)));
    setUnread(result.unread);
  }

  markAll.addEventListener('click', async () => {
    const result = await post('/api/read-all');
    markedRead([...items.keys()]);
    setUnread(result.unread);
  });

  function connect() {
    const source = new EventSource('/events');
    setStatus('connecting', 'connecting…');
    source.addEventListener('ready', () => {
      load().then(
        () => setStatus('live', 'live'),
        (err) => setStatus('error', err.message),
      );
    });
    source.addEventListener('resync', () => {
      load().catch((err) => setStatus('error', err.message));
    });
    source.addEventListener('notification', (e) => {
      const data = JSON.parse(e.data);
      upsert(data.notification);
      setUnread(data.unread);
    });
    source.addEventListener('read', (e) => {
      const data = JSON.parse(e.data);
      markedRead(data.all ? [...items.keys()] : data.ids);
      setUnread(data.unread);
    });
    source.addEventListener('failed', () => setStatus('error', 'live updates are not available'));
    // EventSource reconnects by itself; a reconnection sends "ready" again,
    // which reloads the list.
    source.onerror = () => setStatus('connecting', 'reconnecting…');
  }

  connect();
})();
