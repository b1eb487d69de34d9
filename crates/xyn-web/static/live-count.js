// The navigation's "Needs approval" count, pushed by the node. Every open tab shows it, but a
// browser opens at most six HTTP/1.1 connections to one host, and a stream held per tab would
// use them up (the seventh tab would hang). So the tabs share one stream, held by a shared
// worker; where shared workers are missing, each tab holds its own.
(() => {
  const el = document.querySelector('[data-live-count]');
  if (!el) return;
  const feed = el.getAttribute('data-live-count');
  const show = (html) => { el.innerHTML = html; };
  if (typeof SharedWorker === 'function') {
    const worker = new SharedWorker('/ui/static/live-count-worker.js?feed=' + encodeURIComponent(feed));
    worker.port.onmessage = (m) => show(m.data);
    worker.port.start();
    addEventListener('pagehide', () => worker.port.postMessage('bye'));
  } else {
    new EventSource(feed).addEventListener('approvals', (e) => show(e.data));
  }
})();
