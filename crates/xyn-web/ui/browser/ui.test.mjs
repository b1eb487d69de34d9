// Browser tests of the Xyn Core UI in headless Chromium (Debian's /usr/bin/chromium), driven by
// playwright-core. Started by crates/xyn/tests/ui.rs against a real `xyn serve`:
//   XYN_URL=http://127.0.0.1:PORT SCREENSHOT_DIR=... node ui.test.mjs
// Prints one line per check and exits non-zero on the first failure (with a screenshot).
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';

const BASE = process.env.XYN_URL;
const SHOTS = process.env.SCREENSHOT_DIR;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
if (!BASE || !SHOTS) {
  console.error('set XYN_URL and SCREENSHOT_DIR');
  process.exit(2);
}
fs.mkdirSync(SHOTS, { recursive: true });

const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'xyn-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: CHROMIUM,
  headless: true,
  acceptDownloads: true,
  viewport: { width: 1280, height: 900 },
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
context.setDefaultTimeout(15000);

const problems = [];
function watch(page, name) {
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`${name} (during "${stage}" at ${page.url()}, ${JSON.stringify(m.location())}): console error: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`${name}: page error: ${e.message}`));
  return page;
}

let passed = 0;
let current = null;
let stage = 'start';
async function check(name, fn) {
  stage = name;
  try {
    await fn();
    passed += 1;
    console.log(`ok - ${name}`);
  } catch (e) {
    console.log(`not ok - ${name}\n${e.stack || e}`);
    if (current) await current.screenshot({ path: path.join(SHOTS, 'FAILED.png'), fullPage: true }).catch(() => {});
    await context.close();
    process.exit(1);
  }
}
function expect(cond, msg) {
  if (!cond) throw new Error(msg);
}
async function shot(page, name) {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

const console_ = watch(await context.newPage(), 'console');
const main = watch(await context.newPage(), 'main');
current = main;

const PAGES = [
  ['events', '/ui/events', 'Event console'],
  ['runs', '/ui/runs', 'Runs'],
  ['approvals', '/ui/approvals', 'Needs approval'],
  ['launch', '/ui/runs/new', 'Launch a run'],
  ['blueprints', '/ui/blueprints', 'Blueprints'],
  ['drafts', '/ui/drafts', 'Drafts'],
  ['artifacts', '/ui/artifacts', 'Artifacts'],
  ['footprints', '/ui/footprints', 'Footprints'],
  ['health', '/ui/health', 'Health'],
  ['operator', '/ui/operator', 'Operator view'],
];

await check('every page loads, with its heading and navigation, at 1280px', async () => {
  for (const [name, url, heading] of PAGES) {
    const r = await main.goto(BASE + url);
    expect(r.status() === 200, `${url}: HTTP ${r.status()}`);
    const h1 = await main.locator('h1').first().textContent();
    expect(h1.includes(heading), `${url}: heading ${JSON.stringify(h1)}`);
    expect(await main.locator('[data-testid=nav-events]').isVisible(), `${url}: nav`);
    await shot(main, `${name}-1280`);
  }
});

await check('pages work at phone width (390px) without horizontal overflow of the page', async () => {
  const phone = watch(await context.newPage(), 'phone');
  await phone.setViewportSize({ width: 390, height: 844 });
  for (const [name, url] of PAGES) {
    await phone.goto(BASE + url);
    const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    expect(overflow <= 1, `${url}: the page is ${overflow}px wider than the phone`);
    await shot(phone, `${name}-390`);
  }
  await phone.close();
});

await console_.goto(BASE + '/ui/events');
await console_.waitForFunction(() => window.htmx !== undefined);
// Give the SSE connection a moment to open before anything is emitted.
await console_.waitForTimeout(500);

let runUrl = '';
await check('the launcher shows input errors inline, then starts a run', async () => {
  await main.goto(BASE + '/ui/runs/new?blueprint=bp.ui.gate');
  await main.waitForFunction(() => window.htmx !== undefined);
  // Choosing a blueprint re-renders the form (htmx); wait until the new form has settled.
  const settled = main.evaluate(() => new Promise((resolve) => {
    document.body.addEventListener('htmx:afterSettle', () => resolve(), { once: true });
  }));
  await main.selectOption('[data-testid=launch-blueprint]', 'bp.ui.gate');
  await settled;
  await main.fill('[data-testid=launch-inputs]', '{"who": ');
  await main.locator('[data-testid=launch-errors]').waitFor();
  expect((await main.locator('[data-testid=launch-errors]').textContent()).includes('Not valid JSON'), 'a JSON syntax error is shown');
  await main.fill('[data-testid=launch-inputs]', '{"who": 42}');
  await main.locator('[data-testid=launch-errors] [data-testid=issue]').filter({ hasText: 'who' }).first().waitFor();
  await shot(main, 'launch-inline-error');
  await main.fill('[data-testid=launch-inputs]', '{"who": "browser"}');
  await main.locator('[data-testid=launch-ok]').waitFor();
  await main.click('[data-testid=launch-submit]');
  await main.waitForURL(/\/ui\/runs\/[0-9a-f-]{36}$/);
  runUrl = main.url();
  await main.locator('[data-testid=gate-approve]').waitFor();
  await shot(main, 'run-waiting');
});
const runId = runUrl.split('/').pop();

await check('the new run appears live in the event console, newest first, and clicks through', async () => {
  const row = console_.locator(`[data-testid=event-row][data-event-name="xyn.gate.waiting"]`).first();
  await row.waitFor();
  const firstName = await console_.locator('[data-testid=event-row]').first().getAttribute('data-event-name');
  expect(firstName === 'xyn.gate.waiting', `newest first, got ${firstName}`);
  expect((await row.locator('[data-testid=event-run-link]').getAttribute('href')).endsWith(runId), 'the row links to the run');
  await shot(console_, 'event-console-live');
  // Filter by run, then click through to an event's detail.
  await console_.fill('[data-testid=filter-run-id]', runId);
  await console_.click('[data-testid=filter-apply]');
  await console_.locator('[data-testid=event-row]').first().waitFor();
  const names = await console_.locator('[data-testid=event-row]').evaluateAll((rs) => rs.map((r) => r.dataset.eventName));
  expect(names.includes('xyn.run.started') && names.includes('xyn.gate.waiting'), `filtered rows: ${names}`);
  await console_.locator('[data-testid=event-link]').first().click();
  await console_.locator('[data-testid=event-name]').waitFor();
  await shot(console_, 'event-detail');
  await console_.goto(BASE + '/ui/events');
});

await check('approving the gate from the run page completes the run', async () => {
  await main.fill('[data-testid=gate-comment]', 'looks good');
  await main.click('[data-testid=gate-approve]');
  await main.waitForFunction(() => document.querySelector('[data-testid=run-status]')?.textContent.trim() === 'completed');
  const gate = await main.locator('[data-testid=step][data-step-name=approve]').textContent();
  expect(gate.includes('Decided by ui:local') && gate.includes('looks good'), `gate: ${gate}`);
  const outputs = await main.locator('[data-testid=run-outputs]').textContent();
  expect(outputs.includes('hello browser'), `outputs: ${outputs}`);
  await shot(main, 'run-completed');
  await main.locator('[data-testid=step-link]').first().click();
  await main.locator('[data-testid=step-name]').waitFor();
  await shot(main, 'step-detail');
  const completedRow = console_.locator('[data-testid=event-row][data-event-name="xyn.run.completed"]').first();
  await completedRow.waitFor();
});

await check('runs list filters by status', async () => {
  await main.goto(BASE + '/ui/runs');
  await main.click('[data-testid=status-chip-completed]');
  await main.waitForURL(/status=completed/);
  const rows = await main.locator('[data-testid=run-row]').evaluateAll((rs) => rs.map((r) => r.dataset.status));
  expect(rows.length >= 1 && rows.every((s) => s === 'completed'), `rows: ${rows}`);
  await shot(main, 'runs-completed');
});

await check('validating a broken draft shows the problems inline', async () => {
  await main.goto(BASE + '/ui/drafts/new');
  await main.fill('[data-testid=draft-name-input]', 'broken draft');
  await main.fill('[data-testid=draft-definition]', 'id: bp.ui.broken\ntrigger:\n  event_type: demo.broken\nplan: []\n');
  await main.click('[data-testid=draft-save]');
  await main.waitForURL(/\/ui\/drafts\/[0-9a-f-]{36}$/);
  await main.click('[data-testid=draft-validate]');
  await main.locator('[data-testid=draft-invalid]').waitFor();
  const issue = await main.locator('[data-testid=issue]').first().textContent();
  expect(issue.includes('plan.empty'), `issue: ${issue}`);
  expect(await main.locator('[data-testid=draft-promote]').isDisabled(), 'promote stays disabled');
  await shot(main, 'draft-invalid');
  // Fix it in the editor, validate, promote.
  await main.fill('[data-testid=draft-definition]', 'id: bp.ui.broken\ntrigger:\n  event_type: demo.broken\nplan:\n  - {kind: transform, id: a, expr: "1"}\n');
  await main.click('[data-testid=draft-validate]');
  await main.locator('[data-testid=draft-valid]').waitFor();
  await main.click('[data-testid=draft-promote]');
  await main.locator('[data-testid=draft-promoted]').waitFor();
  await shot(main, 'draft-promoted');
});

await check('an artifact previews and downloads', async () => {
  await main.goto(BASE + '/ui/artifacts?kind=report');
  await main.locator('[data-testid=artifact-link]').first().click();
  await main.locator('[data-testid=artifact-preview]').waitFor();
  const preview = await main.locator('[data-testid=artifact-preview]').textContent();
  expect(preview.includes('"is_valid"'), `preview: ${preview.slice(0, 200)}`);
  await shot(main, 'artifact-detail');
  const [download] = await Promise.all([
    main.waitForEvent('download'),
    main.click('[data-testid=artifact-download]'),
  ]);
  expect(download.suggestedFilename() === 'validation-report.json', `file: ${download.suggestedFilename()}`);
  const file = await download.path();
  const body = JSON.parse(fs.readFileSync(file, 'utf8'));
  expect(typeof body.is_valid === 'boolean', 'the download is the report');
});

await check('footprints chart the day\'s wall time', async () => {
  await main.goto(BASE + '/ui/footprints');
  const heights = await main.locator('[data-testid=chart-wall] rect').evaluateAll((rs) => rs.map((r) => Number(r.getAttribute('height'))));
  expect(heights.some((h) => h > 0), `bars: ${heights}`);
  const rows = await main.locator('[data-testid=footprint-table] tbody tr').count();
  expect(rows > 0, 'the totals table has rows');
  await shot(main, 'footprints-1280');
});

await check('the operator view verifies the audit log', async () => {
  await main.goto(BASE + '/ui/operator');
  await main.click('[data-testid=audit-verify]');
  await main.locator('[data-testid=audit-ok]').waitFor();
  await shot(main, 'operator-audit');
});

await check('no console errors or CSP violations on any page', async () => {
  expect(problems.length === 0, problems.join('\n'));
});

await context.close();
console.log(`${passed} passed, 0 failed`);
