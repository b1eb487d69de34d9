// Browser tests of the Xyn Core UI in headless Chromium (Debian's /usr/bin/chromium), driven by
// playwright-core. Started by crates/xyn/tests/ui.rs against a real `xyn serve`:
//   XYN_URL=http://127.0.0.1:PORT SCREENSHOT_DIR=... node ui.test.mjs
// Prints one line per check and exits non-zero on the first failure (with a screenshot).
import fs from 'node:fs';
import {
  BASE, context, watch, check, expect, shot, setCurrent, allowErrors, finish,
} from './harness.mjs';

const console_ = watch(await context.newPage(), 'console');
const main = watch(await context.newPage(), 'main');
setCurrent(main);

const PAGES = [
  ['events', '/ui/events', 'Event console'],
  ['runs', '/ui/runs', 'Runs'],
  ['approvals', '/ui/approvals', 'Needs approval'],
  ['launch', '/ui/runs/new', 'Launch a run'],
  ['blueprints', '/ui/blueprints', 'Blueprints'],
  ['drafts', '/ui/drafts', 'Drafts'],
  ['draft-new', '/ui/drafts/new', 'New draft'],
  ['artifacts', '/ui/artifacts', 'Artifacts'],
  ['footprints', '/ui/footprints', 'Footprints'],
  ['secrets', '/ui/secrets', 'Secrets'],
  ['health', '/ui/health', 'Health'],
  ['operator', '/ui/operator', 'Operator view'],
  ['search', '/ui/search?q=web-1', 'Search'],
];

// No page may be wider than the window: the root's scrollWidth fits its clientWidth.
async function assertNoOverflow(page, what) {
  const [sw, cw] = await page.evaluate(() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]);
  expect(sw <= cw, `${what}: the page is ${sw}px wide in a ${cw}px window`);
}

// The relative luminance of an rgb() colour (0 black … 1 white).
function luminance(rgb) {
  const [r, g, b] = rgb.match(/\d+(\.\d+)?/g).slice(0, 3).map(Number).map((c) => {
    const x = c / 255;
    return x <= 0.03928 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4;
  });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}

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
    await assertNoOverflow(phone, url);
    // The navigation wraps: every link stays inside the window.
    const right = await phone.locator('.nav a').evaluateAll((as) => Math.max(...as.map((a) => a.getBoundingClientRect().right)));
    expect(right <= 390, `${url}: a navigation link ends at ${right}px`);
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
  await main.goto(BASE + '/ui/runs/new?blueprint=bp.ui.gate&view=json');
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

// The draft editor is CodeMirror over the form's textarea: its instance hangs on its wrapper.
const editorValue = (page) => page.evaluate(() => document.querySelector('.CodeMirror').CodeMirror.getValue());
const setEditor = (page, text) => page.evaluate((t) => document.querySelector('.CodeMirror').CodeMirror.setValue(t), text);

await check('drafts are edited in a code editor with line numbers and YAML highlighting', async () => {
  await main.goto(BASE + '/ui/drafts/new');
  const editor = main.locator('[data-testid=draft-code-editor]');
  await editor.waitFor();
  expect(!(await main.locator('[data-testid=draft-definition]').isVisible()), 'the textarea gives way to the editor');
  const numbers = await editor.locator('.CodeMirror-linenumber').allTextContents();
  expect(numbers.includes('1') && numbers.includes('10'), `line numbers: ${numbers.slice(0, 12)}`);
  expect(await editor.locator('.cm-atom').count() > 3 && await editor.locator('.cm-string').count() > 0, 'YAML keys and strings are highlighted');
  // The editor's assets come from the binary, cached like htmx.
  for (const f of ['codemirror.js', 'codemirror-yaml.js', 'codemirror.css', 'draft-editor.js']) {
    const r = await main.request.get(`${BASE}/ui/static/${f}`);
    expect(r.status() === 200 && (r.headers()['cache-control'] || '').includes('max-age'), `${f}: ${r.status()} ${r.headers()['cache-control']}`);
  }
  // Type into it: a comment at the end, and Tab indents with spaces (YAML has no tabs).
  await main.fill('[data-testid=draft-name-input]', 'typed draft');
  await editor.click();
  await main.keyboard.press('Control+End');
  await main.keyboard.press('Enter');
  await main.keyboard.press('Home');
  await main.keyboard.press('Shift+End');
  await main.keyboard.press('Backspace');
  await main.keyboard.press('Tab');
  await main.keyboard.type('# typed in the editor');
  const typed = await editorValue(main);
  expect(typed.endsWith('\n  # typed in the editor') && !typed.includes('\t'), `typed: ${JSON.stringify(typed.slice(-60))}`);
  await main.keyboard.press('Escape');
  expect(await main.evaluate(() => document.activeElement?.dataset.testid) === 'draft-save', 'Esc leaves the editor for its buttons');
  await main.click('[data-testid=draft-save]');
  await main.waitForURL(/\/ui\/drafts\/[0-9a-f-]{36}$/);
  await main.reload();
  await main.locator('[data-testid=draft-code-editor]').waitFor();
  expect((await editorValue(main)).endsWith('  # typed in the editor'), 'the typed text was saved (after a reload)');
  // Saving again goes through htmx (the editor is swapped): an edit still arrives.
  await setEditor(main, (await editorValue(main)) + '\n# second edit');
  await main.click('[data-testid=draft-save]');
  await main.locator('[data-testid=flash]').filter({ hasText: 'revision 2' }).waitFor();
  await main.locator('[data-testid=draft-code-editor]').waitFor();
  expect((await editorValue(main)).endsWith('# second edit'), 'the editor is back after the swap, with the saved text');
  expect(await main.locator('.CodeMirror').count() === 1, 'one editor after the swap');
  await shot(main, 'draft-editor');
});

await check('validating a broken draft shows the problems inline, with their lines marked in the editor', async () => {
  await main.goto(BASE + '/ui/drafts/new');
  await main.locator('[data-testid=draft-code-editor]').waitFor();
  await main.fill('[data-testid=draft-name-input]', 'broken draft');
  await setEditor(main, 'id: bp.ui.broken\ntrigger:\n  event_type: demo.broken\nplan: []\n');
  await main.click('[data-testid=draft-save]');
  await main.waitForURL(/\/ui\/drafts\/[0-9a-f-]{36}$/);
  await main.locator('[data-testid=draft-code-editor]').waitFor();
  await main.click('[data-testid=draft-validate]');
  await main.locator('[data-testid=draft-invalid]').waitFor();
  const issue = await main.locator('[data-testid=issue]').first().textContent();
  expect(issue.includes('plan.empty'), `issue: ${issue}`);
  expect(await main.locator('[data-testid=draft-promote]').isDisabled(), 'promote stays disabled');
  await shot(main, 'draft-invalid');
  // A template naming an input that does not exist, on line 8.
  await setEditor(main, 'id: bp.ui.broken\ntrigger:\n  event_type: demo.broken\nplan:\n  - kind: transform\n    id: a\n    template:\n      x: "{{inputs.nope}}"\n');
  await main.click('[data-testid=draft-validate]');
  await main.locator('[data-testid=issue]').filter({ hasText: 'inputs.nope' }).waitFor();
  const line = main.locator('[data-testid=issue]').filter({ hasText: 'inputs.nope' }).locator('[data-testid=issue-line]');
  expect((await line.textContent()).trim() === 'line 8', `the issue's line: ${await line.textContent()}`);
  await main.locator('.CodeMirror .cm-issue-line').first().waitFor();
  const marked = await main.evaluate(() => {
    const cm = document.querySelector('.CodeMirror').CodeMirror;
    const lines = [];
    cm.eachLine((h) => { const i = cm.lineInfo(h); if ((i.bgClass || '').includes('cm-issue-line')) lines.push(i.line + 1); });
    return lines;
  });
  expect(JSON.stringify(marked) === '[8]', `marked lines: ${marked}`);
  expect(await main.locator('.CodeMirror .cm-issue-marker').count() === 1, 'one gutter marker');
  await line.click();
  const cursor = await main.evaluate(() => {
    const cm = document.querySelector('.CodeMirror').CodeMirror;
    return [cm.getCursor().line + 1, cm.hasFocus()];
  });
  expect(cursor[0] === 8 && cursor[1], `the cursor went to ${cursor}`);
  await shot(main, 'draft-invalid-lines');
  // A syntax error refuses the save, with its line.
  await setEditor(main, 'id: bp.ui.broken\ntrigger:\n  event_type: demo.broken\nplan: [\n  a: b: c\n');
  allowErrors(main.url().replace(BASE, ''));
  await main.click('[data-testid=draft-save]');
  await main.locator('[data-testid=draft-error] [data-testid=issue-line]').waitFor();
  await main.locator('.CodeMirror .cm-issue-line').first().waitFor();
  // Fix it in the editor, validate, promote: one banner.
  await setEditor(main, 'id: bp.ui.broken\ntrigger:\n  event_type: demo.broken\nplan:\n  - {kind: transform, id: a, expr: "1"}\n');
  await main.click('[data-testid=draft-validate]');
  await main.locator('[data-testid=draft-valid]').waitFor();
  expect(await main.locator('.CodeMirror .cm-issue-line').count() === 0, 'no marked lines once valid');
  await main.click('[data-testid=draft-promote]');
  await main.locator('[data-testid=draft-promoted]').waitFor();
  expect(await main.locator('[data-testid=draft-promoted]').count() === 1 && await main.locator('.ok-note, .flash').count() === 1,
    `one banner after promote: ${await main.locator('.ok-note, .flash').allTextContents()}`);
  await shot(main, 'draft-promoted');
});

await check('the draft editor shows hostile text as text, follows dark mode and fits 390px', async () => {
  await main.goto(BASE + '/ui/drafts/new');
  await main.locator('[data-testid=draft-code-editor]').waitFor();
  const attack = `# </textarea><img src=x onerror="window.__xss=1"><script>window.__xss=2</script>\nid: bp.ui.hostile\nname: "${'x'.repeat(400)}"\n`;
  await main.fill('[data-testid=draft-name-input]', '<b>hostile</b> draft');
  await setEditor(main, attack);
  await main.click('[data-testid=draft-save]');
  await main.waitForURL(/\/ui\/drafts\/[0-9a-f-]{36}$/);
  await main.locator('[data-testid=draft-code-editor]').waitFor();
  expect(await editorValue(main) === attack, 'the text comes back as it was written');
  expect(await main.evaluate(() => window.__xss === undefined), 'no attack code ran');
  expect((await main.locator('[data-testid=draft-name]').textContent()) === '<b>hostile</b> draft', 'the name is text');
  const hostile = main.url();
  const dark = watch(await context.newPage(), 'editor-dark');
  await dark.emulateMedia({ colorScheme: 'dark' });
  await dark.setViewportSize({ width: 390, height: 844 });
  await dark.goto(hostile);
  await dark.locator('[data-testid=draft-code-editor]').waitFor();
  const [bg, ink, gutter] = await dark.evaluate(() => {
    const s = (q) => getComputedStyle(document.querySelector(q));
    return [s('.CodeMirror').backgroundColor, s('.CodeMirror').color, s('.CodeMirror-gutters').backgroundColor];
  });
  expect(luminance(bg) < 0.05 && luminance(ink) > 0.6 && luminance(gutter) < 0.1, `dark editor: ${bg} / ${ink} / ${gutter}`);
  // A 400-character line scrolls inside the editor, not the page.
  await assertNoOverflow(dark, 'draft editor (dark, 390px)');
  const right = await dark.evaluate(() => document.querySelector('.CodeMirror').getBoundingClientRect().right);
  expect(right <= 390, `the editor ends at ${right}px`);
  await shot(dark, 'draft-editor-dark-390');
  await dark.close();
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

// The transforms here can each take under a millisecond (their wall time rounds to 0 ms on a
// fast machine), but the gate approved above waited for a click: its day has a bar.
await check('footprints chart the day\'s working and waiting time', async () => {
  await main.goto(BASE + '/ui/footprints');
  const heights = async (chart) => main.locator(`[data-testid=chart-${chart}] rect`).evaluateAll((rs) => rs.map((r) => Number(r.getAttribute('height'))));
  const wall = await heights('wall');
  expect(wall.length === 14 && wall.every((h) => h >= 0), `wall bars: ${wall}`);
  const waited = await heights('gate-wait');
  expect(waited.some((h) => h > 0), `gate-wait bars: ${waited}`);
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

await check('search by a short id finds the run, from the navigation', async () => {
  const short = runId.slice(-8);
  await main.goto(BASE + '/ui/runs');
  const shown = await main.locator(`[data-testid=run-row][data-run-id="${runId}"] code.id`).textContent();
  expect(shown === short, `the runs list shows the short id ${short}, got ${shown}`);
  // The first six digits are enough: the search box opens the one run they name.
  await main.fill('[data-testid=nav-search]', short.slice(0, 6));
  await main.press('[data-testid=nav-search]', 'Enter');
  await main.waitForURL(new RegExp(`/ui/runs/${runId}$`));
  expect((await main.locator('[data-testid=run-short-id]').textContent()) === short, 'the run page shows its short id');
  // An input value lists its runs; the key inputs show in the row.
  await main.fill('[data-testid=nav-search]', 'BROWSER');
  await main.press('[data-testid=nav-search]', 'Enter');
  await main.waitForURL(/\/ui\/search\?q=BROWSER/);
  const rows = await main.locator('[data-testid=search-runs] [data-testid=run-row]').evaluateAll((rs) => rs.map((r) => r.dataset.runId));
  expect(rows.includes(runId), `search rows: ${rows}`);
  const summary = await main.locator(`[data-testid=run-row][data-run-id="${runId}"] [data-testid=run-inputs-summary]`).textContent();
  expect(summary.includes('who=browser'), `inputs summary: ${summary}`);
  await shot(main, 'search-1280');
  // The CLI and the API take the same prefix; an unknown one is a clear 404.
  const api = await main.evaluate(async (p) => {
    const r = await fetch(`/api/v1/runs/${p}`);
    return [r.status, await r.json()];
  }, short.slice(0, 6));
  expect(api[0] === 200 && api[1].run_id === runId, `GET /api/v1/runs/<prefix>: ${JSON.stringify(api)}`);
});

await check('the launcher form uses defaults and refuses a missing required input', async () => {
  await main.goto(BASE + '/ui/runs/new?blueprint=bp.ui.form');
  await main.waitForFunction(() => window.htmx !== undefined);
  expect((await main.getAttribute('[data-testid=launch-form]', 'data-view')) === 'form', 'the form view is the default');
  expect((await main.getAttribute('[data-testid=launch-field-greeting]', 'placeholder')) === 'hello', 'a default shows as the placeholder');
  expect((await main.inputValue('[data-testid=launch-field-greeting]')) === '', 'an optional field starts blank');
  expect((await main.getAttribute('[data-testid=launch-field-times]', 'type')) === 'number', 'an integer gets a number field');
  expect(await main.locator('label[for=in-who] .req').count() === 1, 'the required input is marked');
  // The browser refuses to send the form without the required input...
  await main.click('[data-testid=launch-submit]');
  const missing = await main.evaluate(() => document.querySelector('[data-testid=launch-field-who]').validity.valueMissing);
  expect(missing, 'the required field is reported missing');
  expect(main.url().includes('/ui/runs/new'), 'no run was started');
  // ...and so does the node, when a form arrives without it anyway.
  allowErrors('/ui/runs');
  const [status, body] = await main.evaluate(async () => {
    const fd = new URLSearchParams(new FormData(document.querySelector('#launch-form')));
    fd.set('in.who', '   ');
    const r = await fetch('/ui/runs', { method: 'POST', body: fd, headers: { 'HX-Request': 'true' } });
    return [r.status, await r.text()];
  });
  expect(status === 422 && body.includes('input.required'), `a blank required input: ${status} ${body.slice(0, 300)}`);
  await shot(main, 'launch-form-1280');
  // Switching blueprints does not carry the old text over.
  await main.fill('[data-testid=launch-field-who]', 'ada');
  await main.click('[data-testid=launch-submit]');
  await main.waitForURL(/\/ui\/runs\/[0-9a-f-]{36}$/);
  await main.waitForFunction(() => document.querySelector('[data-testid=run-status]')?.textContent.trim() === 'completed');
  const outputs = await main.locator('[data-testid=run-outputs]').textContent();
  expect(outputs.includes('hello ada x1'), `the defaults were used: ${outputs}`);
  const inputs = await main.evaluate(async (id) => (await (await fetch(`/api/v1/runs/${id}`)).json()).inputs, main.url().split('/').pop());
  expect(JSON.stringify(inputs) === JSON.stringify({ greeting: 'hello', loud: false, times: 1, who: 'ada' }), `inputs: ${JSON.stringify(inputs)}`);
  // The JSON view starts from the required inputs only, and switching blueprints starts afresh.
  await main.goto(BASE + '/ui/runs/new?blueprint=bp.ui.form&view=json');
  const text = JSON.parse(await main.inputValue('[data-testid=launch-inputs]'));
  expect(JSON.stringify(text) === JSON.stringify({ who: '' }), `JSON template: ${JSON.stringify(text)}`);
  await main.fill('[data-testid=launch-inputs]', '{"who": "typed for the old blueprint"}');
  await main.waitForFunction(() => window.htmx !== undefined);
  const settled = main.evaluate(() => new Promise((resolve) => {
    document.body.addEventListener('htmx:afterSettle', () => resolve(), { once: true });
  }));
  await main.selectOption('[data-testid=launch-blueprint]', 'bp.ui.gate');
  await settled;
  const after = await main.inputValue('[data-testid=launch-inputs]');
  expect(!after.includes('typed for the old blueprint'), `the old text stayed: ${after}`);
});

await check('an LLM answer renders as Markdown and an XSS attack in it is inert', async () => {
  const attack = '# Plan\n\n1. **Restart** the `disk` service\n2. Check [the runbook](https://example.com/runbook)\n\n'
    + '<script>window.__xss = 1</script>\n\n<img src=x onerror="window.__xss = 2">\n\n'
    + '[click me](javascript:window.__xss=3) <a href="javascript:window.__xss=4">raw link</a>';
  const run = await main.evaluate(async (text) => {
    const r = await fetch('/api/v1/runs', { method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ blueprint_ref: 'bp.ui.md', inputs: { text } }) });
    return r.json();
  }, attack);
  expect(run.run_id, `run: ${JSON.stringify(run)}`);
  // The step page is not live: open it once the run has finished (a busy machine is slower).
  await main.waitForFunction(async (id) => (await (await fetch(`/api/v1/runs/${id}`)).json()).status === 'completed',
    run.run_id, { polling: 100, timeout: 15000 });
  await main.goto(`${BASE}/ui/runs/${run.run_id}/steps/answer`);
  const md = main.locator('[data-testid=rendered-text] .md').first();
  await md.waitFor();
  expect((await md.locator('h1').textContent()) === 'Plan', 'the heading renders');
  expect((await md.locator('strong').first().textContent()) === 'Restart', 'bold renders');
  expect(await md.locator('a[href="https://example.com/runbook"]').count() === 1, 'a web link stays');
  const bad = await md.evaluate((el) => ({
    scripts: el.querySelectorAll('script, iframe, object, embed').length,
    handlers: [...el.querySelectorAll('*')].filter((n) => [...n.attributes].some((a) => a.name.startsWith('on'))).length,
    jsLinks: [...el.querySelectorAll('[href], [src]')].filter((n) => /^\s*javascript:/i.test(n.getAttribute('href') || n.getAttribute('src') || '')).length,
    text: el.textContent,
  }));
  expect(bad.scripts === 0 && bad.handlers === 0 && bad.jsLinks === 0, `live markup survived: ${JSON.stringify(bad)}`);
  expect(bad.text.includes('<script>window.__xss = 1</script>'), 'raw HTML is shown as text');
  // Click everything that looks like a link: nothing runs.
  for (const a of await md.locator('a').all()) {
    if ((await a.getAttribute('href') || '').startsWith('https://')) continue;
    await a.click().catch(() => {});
  }
  expect(await main.evaluate(() => window.__xss === undefined), 'no attack code ran');
  await shot(main, 'step-markdown-1280');
  // The run page renders the same output too, and an error shows its code and message with the raw data folded.
  await main.goto(`${BASE}/ui/runs/${run.run_id}`);
  await main.locator('[data-testid=rendered-text] .md h1').first().waitFor();
  expect(await main.evaluate(() => window.__xss === undefined), 'no attack code ran on the run page');
});

// A second version of bp.ui.gate: a conditional step with retries (its condition carries markup
// and an ampersand, which must show as text) and a gate whose rejection cancels the run.
const GATE_V2 = `id: bp.ui.gate
name: UI gate
trigger:
  event_type: demo.ui
inputs:
  - name: who
    type: string
plan:
  - kind: transform
    id: greet
    template:
      message: "hello {{inputs.who}}"
  - kind: transform
    id: shout
    if: '.inputs.who != "<script>window.__xss = 5</script>" and .inputs.who != "a&b"'
    retry: {max_attempts: 3, backoff: exponential, delay: 1s}
    expr: '{loud: (.inputs.who | ascii_upcase)}'
  - kind: gate
    id: approve
    mode: manual
    on_reject: cancel
    message: "Greet {{inputs.who}}?"
  - kind: transform
    id: finish
    expr: '.steps.greet.outputs.message'
outputs:
  - name: message
    value: "{{steps.greet.outputs.message}}"
`;

await check('the blueprint page draws the plan, counts the runs and diffs two versions', async () => {
  const applied = await main.evaluate(async (definition) => {
    const r = await fetch('/api/v1/blueprints', { method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ definition }) });
    return [r.status, await r.json()];
  }, GATE_V2);
  expect(applied[0] < 300 && applied[1].version === 2, `apply v2: ${JSON.stringify(applied)}`);
  // The list: one completed run of bp.ui.gate (approved above), so 100 %.
  await main.goto(BASE + '/ui/blueprints');
  const row = main.locator('[data-testid=blueprint-row]').filter({ hasText: 'bp.ui.gate' });
  expect((await row.locator('[data-testid=run-count]').textContent()).trim() === '1', 'the list counts the run');
  expect((await row.locator('[data-testid=success-rate]').textContent()).trim() === '100 %', 'the list shows the success rate');
  await main.goto(BASE + '/ui/blueprints/bp.ui.gate');
  const stats = await main.locator('[data-testid=blueprint-run-stats]').textContent();
  expect(/Runs\s*1/.test(stats) && stats.includes('100 %'), `run stats: ${stats}`);
  // The diagram: one node per step, the gate set apart, its rejection drawn, the retry badge.
  const svg = main.locator('svg[data-testid=plan-diagram]');
  await svg.waitFor();
  const nodes = await svg.locator('[data-testid=plan-node]').evaluateAll((ns) => ns.map((n) => `${n.dataset.step}:${n.dataset.kind}`));
  expect(JSON.stringify(nodes) === JSON.stringify(['greet:transform', 'shout:transform', 'approve:gate', 'finish:transform']), `nodes: ${nodes}`);
  expect(await svg.locator('[data-testid=plan-node][data-kind=gate] polygon').count() === 1, 'the gate is drawn as a hexagon');
  expect((await svg.locator('[data-testid=plan-rejected]').textContent()).includes('run cancelled'), 'the rejection path');
  expect((await svg.locator('[data-testid=plan-retry]').textContent()) === '↻ 3× exponential', 'the retry badge');
  expect(await svg.locator('[data-edge=skip]').count() === 1, 'the bypass of the conditional step');
  const cond = await svg.locator('[data-testid=plan-condition] title').textContent();
  expect(cond.includes('"<script>window.__xss = 5</script>"') && cond.includes('"a&b"'), `the condition as text: ${cond}`);
  expect(await main.evaluate(() => document.querySelectorAll('svg script').length === 0 && window.__xss === undefined), 'no markup ran');
  // Gates look different from other steps in the page's colours.
  const fills = await svg.evaluate((s) => ['gate', 'transform'].map((k) => getComputedStyle(s.querySelector(`[data-kind=${k}] .pd-shape`)).fill));
  expect(fills[0] !== fills[1], `gate and step fills: ${fills}`);
  await shot(main, 'blueprint-1280');
  // Compare: by default the version before the newest against the newest.
  expect((await main.inputValue('[data-testid=compare-from]')) === '1' && (await main.inputValue('[data-testid=compare-to]')) === '2', 'default pair');
  await main.click('[data-testid=compare-submit]');
  await main.waitForURL(/\/ui\/blueprints\/bp\.ui\.gate\/diff\?from=1&to=2$/);
  const added = await main.locator('[data-testid=diff-add]').allTextContents();
  expect(added.some((l) => l.includes('+') && l.includes('id: shout')), `added lines: ${added}`);
  expect(added.every((l) => /^\d*\+/.test(l.trim())), `every added line carries a +: ${added}`);
  const bg = await main.locator('[data-testid=diff-add]').first().evaluate((e) => getComputedStyle(e).backgroundColor);
  expect(bg !== 'rgba(0, 0, 0, 0)', 'added lines are coloured');
  expect((await main.locator('[data-testid=diff-summary]').textContent()).includes('added'), 'the summary counts');
  await shot(main, 'blueprint-diff-1280');
  // An unknown version is the 404 page, not JSON; a version that is not a number, a 400 page.
  const missing = await main.request.get(`${BASE}/ui/blueprints/bp.ui.gate/diff?from=1&to=9`);
  expect(missing.status() === 404 && (await missing.text()).includes('data-testid="error-page"'), `unknown version: ${missing.status()}`);
  const bad = await main.request.get(`${BASE}/ui/blueprints/bp.ui.gate/diff?from=x`);
  expect(bad.status() === 400 && (await bad.text()).includes('data-testid="error-page"'), `bad version: ${bad.status()}`);
  const none = await main.request.get(`${BASE}/ui/blueprints/bp.no.such/diff`);
  expect(none.status() === 404, `unknown blueprint: ${none.status()}`);
  // Phone width and both themes.
  const phone = watch(await context.newPage(), 'blueprint-phone');
  await phone.setViewportSize({ width: 390, height: 844 });
  for (const [name, url] of [['blueprint', '/ui/blueprints/bp.ui.gate'], ['blueprint-diff', '/ui/blueprints/bp.ui.gate/diff?from=1&to=2']]) {
    await phone.goto(BASE + url);
    await assertNoOverflow(phone, url);
    await shot(phone, `${name}-390`);
    for (const scheme of ['dark', 'light']) {
      await phone.emulateMedia({ colorScheme: scheme });
      await phone.setViewportSize({ width: 1280, height: 900 });
      await phone.goto(BASE + url);
      await shot(phone, `${name}-${scheme}-1280`);
      await phone.setViewportSize({ width: 390, height: 844 });
      await phone.goto(BASE + url);
      await assertNoOverflow(phone, `${url} (${scheme}, 390px)`);
      await shot(phone, `${name}-${scheme}-390`);
    }
    await phone.emulateMedia({ colorScheme: 'light' });
  }
  // In dark mode the diagram's boxes are dark too.
  await phone.emulateMedia({ colorScheme: 'dark' });
  await phone.goto(BASE + '/ui/blueprints/bp.ui.gate');
  const darkFill = await phone.locator('[data-testid=plan-node][data-kind=transform] .pd-shape').first().evaluate((e) => getComputedStyle(e).fill);
  expect(luminance(darkFill) < 0.1, `a step box in dark mode: ${darkFill}`);
  await phone.close();
});

await check('a blueprint\'s trigger is switched off and on from its page', async () => {
  await main.goto(BASE + '/ui/blueprints/bp.ui.md');
  expect(await main.locator('[data-testid=blueprint-disabled]').count() === 0, 'enabled at first');
  const toggle = main.locator('[data-testid=blueprint-trigger-toggle]');
  expect((await toggle.textContent()).includes('Disable'), 'offers to disable');
  await toggle.click();
  await main.locator('[data-testid=blueprint-disabled]').waitFor();
  expect((await main.locator('[data-testid=blueprint-trigger-toggle]').textContent()).includes('Enable'), 'offers to enable');
  const api = await main.evaluate(async () => (await (await fetch('/api/v1/blueprints/bp.ui.md')).json()).enabled);
  expect(api === false, `the API agrees: ${api}`);
  await main.goto(BASE + '/ui/blueprints');
  const row = main.locator('[data-testid=blueprint-row]').filter({ hasText: 'bp.ui.md' });
  expect(await row.locator('[data-testid=blueprint-disabled]').count() === 1, 'the list marks it off');
  // A post without the form's CSRF token is refused and changes nothing.
  const forged = await main.request.post(`${BASE}/ui/blueprints/bp.ui.md/trigger`, { form: { op: 'enable' } });
  expect(forged.status() === 403, `no CSRF token: ${forged.status()}`);
  await main.goto(BASE + '/ui/blueprints/bp.ui.md');
  await main.click('[data-testid=blueprint-trigger-toggle]');
  await main.waitForFunction(() => !document.querySelector('[data-testid=blueprint-disabled]'));
});

await check('secrets are set and removed from their page, and no value ever comes back', async () => {
  const value = 'ui-secret-value-7f3a9c';
  await main.goto(BASE + '/ui/secrets');
  await main.fill('[data-testid=secret-path]', 'team/ui/token');
  await main.fill('[data-testid=secret-value]', value);
  await main.click('[data-testid=secret-save]');
  await main.locator('[data-testid=flash]').waitFor();
  const row = main.locator('[data-testid=secret-row][data-path="team/ui/token"]');
  expect((await row.textContent()).includes('v1'), 'the new secret is listed at version 1');
  expect(!(await main.content()).includes(value), 'the page shows the value');
  // A path outside the store's namespaces: the message, the path kept, the value not.
  allowErrors('/ui/secrets');
  await main.fill('[data-testid=secret-path]', 'nope/x');
  await main.fill('[data-testid=secret-value]', value);
  const [refused] = await Promise.all([
    main.waitForResponse((r) => r.url().endsWith('/ui/secrets') && r.request().method() === 'POST'),
    main.click('[data-testid=secret-save]'),
  ]);
  expect(refused.status() === 422, `a bad path: ${refused.status()}`);
  await main.locator('[data-testid=secret-error]').waitFor();
  expect((await main.inputValue('[data-testid=secret-path]')) === 'nope/x', 'the path is kept');
  expect((await main.inputValue('[data-testid=secret-value]')) === '', 'the value is not sent back');
  expect(!(await main.content()).includes(value), 'the refusal shows the value');
  // The API agrees, and gives metadata only.
  const api = await main.evaluate(async () => JSON.stringify(await (await fetch('/api/v1/secrets?prefix=team/ui/')).json()));
  expect(api.includes('team/ui/token') && !api.includes(value), `the API list: ${api}`);
  await main.goto(BASE + '/ui/secrets');
  await main.locator('[data-testid=secret-row][data-path="team/ui/token"] [data-testid=secret-remove]').click();
  await main.locator('[data-testid=flash]').waitFor();
  expect(await main.locator('[data-testid=secret-row][data-path="team/ui/token"]').count() === 0, 'removed');
});

await check('dark mode follows the system, on every page, with screenshots', async () => {
  // Live pages hold a server-sent event stream each (the event console, live lists) and
  // Chromium opens at most 6 connections to one host over HTTP/1.1: pages of other checks are
  // parked on about:blank so that the two pages here never wait for a socket.
  for (const p of context.pages()) await p.goto('about:blank');
  const dark = watch(await context.newPage(), 'dark');
  await dark.emulateMedia({ colorScheme: 'dark' });
  const light = watch(await context.newPage(), 'light');
  await light.emulateMedia({ colorScheme: 'light' });
  for (const [name, url] of [...PAGES, ['run', runUrl.replace(BASE, ''), ''], ['step', `${runUrl.replace(BASE, '')}/steps/greet`, '']]) {
    await dark.goto(BASE + url);
    await light.goto(BASE + url);
    const bgDark = await dark.evaluate(() => getComputedStyle(document.body).backgroundColor);
    const bgLight = await light.evaluate(() => getComputedStyle(document.body).backgroundColor);
    const inkDark = await dark.evaluate(() => getComputedStyle(document.body).color);
    expect(luminance(bgDark) < 0.05 && luminance(bgLight) > 0.8, `${url}: backgrounds ${bgDark} / ${bgLight}`);
    expect(luminance(inkDark) > 0.6, `${url}: dark-mode text ${inkDark}`);
    const card = await dark.evaluate(() => {
      const c = document.querySelector('.card, .table-wrap');
      return c ? getComputedStyle(c).backgroundColor : 'rgb(0, 0, 0)';
    });
    expect(luminance(card) < 0.1, `${url}: a card or table is light in dark mode (${card})`);
    await shot(dark, `${name}-dark-1280`);
    await shot(light, `${name}-light-1280`);
    await light.goto('about:blank');
    await dark.setViewportSize({ width: 390, height: 844 });
    await dark.goto(BASE + url);
    await assertNoOverflow(dark, `${url} (dark, 390px)`);
    await shot(dark, `${name}-dark-390`);
    await dark.setViewportSize({ width: 1280, height: 900 });
  }
  await dark.close();
  await light.close();
});

await check('detail pages, search and the 404 page fit 390px too, and 404 keeps the navigation', async () => {
  const phone = watch(await context.newPage(), 'phone-detail');
  await phone.setViewportSize({ width: 390, height: 844 });
  const runPath = runUrl.replace(BASE, '');
  const events = await (await phone.request.get(`${BASE}/api/v1/events?run_id=${runId}&limit=1`)).json();
  const extra = [
    ['run', runPath], ['step', `${runPath}/steps/greet`], ['step-gate', `${runPath}/steps/approve`],
    ['event', `/ui/events/${events.items[0].event_id}`], ['search-results', '/ui/search?q=browser'],
    ['launch-form', '/ui/runs/new?blueprint=bp.ui.form'], ['launch-json', '/ui/runs/new?blueprint=bp.ui.form&view=json'],
    ['not-found', '/ui/no-such-page'],
  ];
  allowErrors('/ui/no-such-page', '/no/such/thing');
  for (const [name, url] of extra) {
    const r = await phone.goto(BASE + url);
    await assertNoOverflow(phone, url);
    expect(await phone.locator('[data-testid=nav-runs]').isVisible(), `${url}: navigation`);
    if (name === 'not-found') expect(r.status() === 404, `${url}: ${r.status()}`);
    await shot(phone, `${name}-390`);
  }
  // A browser outside /ui and /api gets the UI's 404 page, not JSON.
  const r = await phone.goto(BASE + '/no/such/thing');
  expect(r.status() === 404 && await phone.locator('[data-testid=error-page]').isVisible(), 'a 404 page with the layout');
  expect(await phone.locator('[data-testid=nav-runs]').isVisible(), '404: navigation');
  await phone.close();
});

await finish('no console errors or CSP violations on any page');
