// Browser tests of the approvals inbox, retry and re-run, in headless Chromium (Debian's
// /usr/bin/chromium) driven by playwright-core. Started by crates/xyn/tests/ui_inbox.rs against
// a real `xyn serve` with the blueprints bp.ui.gate, bp.ui.hello and bp.ui.flaky:
//   XYN_URL=http://127.0.0.1:PORT SCREENSHOT_DIR=... node inbox.test.mjs
// Prints one line per check and exits non-zero on the first failure (with a screenshot).
import {
  BASE, context, watch, check, expect, shot, setCurrent, onFailureShoot, finish,
} from './harness.mjs';

onFailureShoot('FAILED-inbox');

async function api(method, url, body) {
  const r = await fetch(BASE + url, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  if (r.status >= 300) throw new Error(`${method} ${url}: HTTP ${r.status} ${text}`);
  return json;
}
async function untilStatus(runId, status) {
  const deadline = Date.now() + 15000;
  for (;;) {
    const r = await api('GET', `/api/v1/runs/${runId}`);
    if (r.status === status) return r;
    if (Date.now() > deadline) throw new Error(`run ${runId} is ${r.status}, not ${status}`);
    await new Promise((res) => setTimeout(res, 50));
  }
}
async function startGate(who) {
  const r = await api('POST', '/api/v1/runs', { blueprint_ref: 'bp.ui.gate', inputs: { who } });
  return r.run_id;
}
const count = (page) => page.locator('[data-testid=approvals-count]').getAttribute('data-count');

const main = watch(await context.newPage(), 'main');
setCurrent(main);

await check('the navigation count of waiting gates updates live', async () => {
  await main.goto(BASE + '/ui/runs');
  await main.waitForFunction(() => document.querySelector('[data-testid=approvals-count]')?.dataset.count === '0');
  expect(await main.locator('[data-testid=approvals-count]').isHidden(), 'no badge while nothing waits');
  const started = Date.now();
  const runId = await startGate('first');
  await main.waitForFunction(() => document.querySelector('[data-testid=approvals-count]')?.dataset.count === '1');
  console.log(`# badge updated ${Date.now() - started} ms after the run was started`);
  expect(await main.locator('[data-testid=approvals-count]').isVisible(), 'the badge shows');
  expect((await main.locator('[data-testid=approvals-count]').textContent()).trim() === '1', 'it reads 1');
  await untilStatus(runId, 'waiting');
  await shot(main, 'nav-approvals-count');
});

await check('the inbox lists the waiting gate with its message, and new gates appear live', async () => {
  await main.goto(BASE + '/ui/approvals');
  const card = main.locator('[data-testid=approval]');
  await card.first().waitFor();
  expect((await card.count()) === 1, `one card, got ${await card.count()}`);
  const msg = await main.locator('[data-testid=approval-message]').first().textContent();
  expect(msg.includes('Greet first?'), `message: ${msg}`);
  expect((await main.locator('[data-testid=approval-approvers]').first().textContent()).includes('owner'), 'who may decide');
  // Give the page's stream a moment, then open a second gate: its card appears without reload.
  await main.waitForFunction(() => document.querySelector('[data-testid=approvals-count]')?.dataset.count === '1');
  await startGate('second');
  await main.waitForFunction(() => document.querySelectorAll('[data-testid=approval]').length === 2);
  await main.waitForFunction(() => document.querySelector('[data-testid=approvals-count]')?.dataset.count === '2');
  await shot(main, 'approvals-1280');
});

await check('approving from the card completes the run and takes the count down', async () => {
  const card = main.locator('[data-testid=approval]').filter({ hasText: 'Greet first?' });
  const runId = await card.getAttribute('data-run-id');
  await card.locator('[data-testid=approval-comment]').fill('from the inbox');
  await card.locator('[data-testid=approval-approve]').click();
  // The card leaves (the answer to the post, then the live refresh the decision causes).
  await main.waitForFunction(() => document.querySelectorAll('[data-testid=approval]').length === 1);
  await main.waitForFunction(() => document.querySelector('[data-testid=approvals-count]')?.dataset.count === '1');
  const run = await untilStatus(runId, 'completed');
  expect(run.outputs.message === 'hello first', `outputs: ${JSON.stringify(run.outputs)}`);
  const gate = await api('GET', `/api/v1/runs/${runId}/steps/approve`);
  expect(gate.decided_by === 'ui:local' && gate.decision_comment === 'from the inbox', `gate: ${JSON.stringify(gate)}`);
  await shot(main, 'approvals-after-approve');
});

await check('ten open tabs share one count stream: none hangs and every badge updates live', async () => {
  // A browser opens at most six HTTP/1.1 connections to one host. With a stream per tab the
  // seventh tab would never load; the tabs share one through a shared worker instead.
  const before = Number(await count(main));
  const tabs = [];
  for (let i = 0; i < 10; i += 1) {
    const tab = watch(await context.newPage(), `tab${i}`);
    await tab.goto(BASE + '/ui/health');
    await tab.waitForFunction((n) => document.querySelector('[data-testid=approvals-count]')?.dataset.count === String(n), before);
    tabs.push(tab);
  }
  const runId = await startGate('tabs');
  for (const tab of tabs) {
    await tab.waitForFunction((n) => document.querySelector('[data-testid=approvals-count]')?.dataset.count === String(n), before + 1);
  }
  // Decided again, so the later checks see the inbox as it was; every badge goes back down.
  await untilStatus(runId, 'waiting');
  await api('POST', `/api/v1/runs/${runId}/steps/approve/approve`, {});
  await untilStatus(runId, 'completed');
  for (const tab of tabs) {
    await tab.waitForFunction((n) => document.querySelector('[data-testid=approvals-count]')?.dataset.count === String(n), before);
  }
  for (const tab of tabs) await tab.close();
});

await check('the runs list shows new runs and their status changes live', async () => {
  await main.goto(BASE + '/ui/runs');
  await main.waitForFunction(() => window.htmx !== undefined);
  // The page's streams connect; the count arriving says the page is live.
  await main.waitForFunction(() => document.querySelector('[data-testid=approvals-count]')?.dataset.count !== undefined);
  await main.waitForTimeout(300);
  const r = await api('POST', '/api/v1/runs', { blueprint_ref: 'bp.ui.hello', inputs: { who: 'live' } });
  await main.locator(`[data-testid=run-row][data-run-id="${r.run_id}"][data-status=completed]`).waitFor();
  await shot(main, 'runs-live');
});

await check('the runs list filters waiting runs and shows elapsed time on unfinished rows', async () => {
  await main.goto(BASE + '/ui/runs');
  await main.click('[data-testid=status-chip-waiting]');
  await main.waitForURL(/status=waiting/);
  const rows = await main.locator('[data-testid=run-row]').evaluateAll((rs) => rs.map((r) => r.dataset.status));
  expect(rows.length === 1 && rows[0] === 'waiting', `rows: ${rows}`);
  expect(await main.locator('[data-testid=run-elapsed]').count() === 1, 'elapsed time on the waiting row');
});

await check('the inbox fits a phone (390px) without horizontal overflow', async () => {
  const phone = watch(await context.newPage(), 'phone');
  await phone.setViewportSize({ width: 390, height: 844 });
  await phone.goto(BASE + '/ui/approvals');
  await phone.locator('[data-testid=approval]').first().waitFor();
  const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  expect(overflow <= 0, `the page is ${overflow}px wider than the phone`);
  await shot(phone, 'approvals-390');
  await phone.close();
});

await check('retry from the failed step: a new attempt, the earlier one kept and shown', async () => {
  const r = await api('POST', '/api/v1/runs', { blueprint_ref: 'bp.ui.flaky', inputs: {} });
  await untilStatus(r.run_id, 'failed');
  await main.goto(BASE + `/ui/runs/${r.run_id}`);
  await main.locator('[data-testid=run-retry]').click();
  await main.waitForFunction(() => document.querySelector('[data-testid=run-status]')?.textContent.trim() === 'completed');
  await main.locator('[data-testid=step-attempts]').first().waitFor();
  const attempts = await main.locator('[data-testid=step-attempt]').count();
  expect(attempts === 1, `one earlier attempt shown, got ${attempts}`);
  const step = await api('GET', `/api/v1/runs/${r.run_id}/steps/call`);
  expect(step.attempt === 2 && step.status === 'completed', `step: ${JSON.stringify(step)}`);
  expect((await main.locator('[data-testid=run-retries]').textContent()).includes('call attempt 2'), 'the retry is listed');
  await shot(main, 'run-retried');
});

await check('re-run with an edited input starts a new run linked to the old one', async () => {
  const r = await api('POST', '/api/v1/runs', { blueprint_ref: 'bp.ui.hello', inputs: { who: 'ann' } });
  await untilStatus(r.run_id, 'completed');
  await main.goto(BASE + `/ui/runs/${r.run_id}`);
  await main.click('[data-testid=run-rerun]');
  await main.waitForURL(/\/rerun$/);
  const prefilled = JSON.parse(await main.locator('[data-testid=rerun-inputs]').inputValue());
  expect(prefilled.who === 'ann', `prefilled: ${JSON.stringify(prefilled)}`);
  await shot(main, 'rerun-form');
  // A bad edit is refused inline, then a good one starts the run.
  await main.fill('[data-testid=rerun-inputs]', '{"who": 7}');
  await main.click('[data-testid=rerun-submit]');
  await main.locator('[data-testid=rerun-errors]').waitFor();
  await main.fill('[data-testid=rerun-inputs]', '{"who": "bea"}');
  await main.click('[data-testid=rerun-submit]');
  await main.waitForURL((u) => /\/ui\/runs\/[0-9a-f-]{36}$/.test(u.pathname) && !u.pathname.endsWith(r.run_id));
  const newId = main.url().split('/').pop();
  await main.waitForFunction(() => document.querySelector('[data-testid=run-status]')?.textContent.trim() === 'completed');
  const outputs = await main.locator('[data-testid=run-outputs]').textContent();
  expect(outputs.includes('hello bea'), `outputs: ${outputs}`);
  expect((await main.locator('[data-testid=run-rerun-of]').getAttribute('href')).endsWith(r.run_id), 'links to the old run');
  await shot(main, 'rerun-new-run');
  await main.goto(BASE + `/ui/runs/${r.run_id}`);
  expect((await main.locator('[data-testid=run-rerun-link]').first().getAttribute('href')).endsWith(newId), 'the old run links to the new');
});

await finish('no console errors on any of these pages');
