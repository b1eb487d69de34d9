// Holds the one stream of the approvals count for every tab of this origin (see live-count.js)
// and hands each tab the latest count when it connects.
const feed = new URL(self.location.href).searchParams.get('feed') || '';
const ports = new Set();
let last = null;
if (feed.startsWith('/ui/')) {
  new EventSource(feed).addEventListener('approvals', (e) => {
    last = e.data;
    for (const p of ports) p.postMessage(last);
  });
}
self.onconnect = (e) => {
  const port = e.ports[0];
  ports.add(port);
  port.onmessage = (m) => { if (m.data === 'bye') ports.delete(port); };
  port.start();
  if (last !== null) port.postMessage(last);
};
