// What every browser test script shares: the environment it is started with (XYN_URL,
// SCREENSHOT_DIR, CHROMIUM), one headless Chromium (Debian's /usr/bin/chromium driven by
// playwright-core) with a throwaway profile, console-error and page-error collection, and
// numbered checks that print one line each and stop at the first failure with a screenshot.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';

export const BASE = process.env.XYN_URL;
export const SHOTS = process.env.SCREENSHOT_DIR;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
if (!BASE || !SHOTS) {
  console.error('set XYN_URL and SCREENSHOT_DIR');
  process.exit(2);
}
fs.mkdirSync(SHOTS, { recursive: true });

const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'xyn-chromium-'));
export const context = await chromium.launchPersistentContext(profile, {
  executablePath: CHROMIUM,
  headless: true,
  acceptDownloads: true,
  viewport: { width: 1280, height: 900 },
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
context.setDefaultTimeout(15000);

// Console errors and page errors seen so far, on any watched page.
export const problems = [];
// Refusals a check provokes on purpose (a 404 page, a 422 from a form): not problems.
const deliberate = [];
let stage = 'start';
let current = null;
let failedShot = 'FAILED';
let passed = 0;

/// The name of the screenshot taken when a check fails (without `.png`).
export function onFailureShoot(name) {
  failedShot = name;
}

/// The page to screenshot if a check fails.
export function setCurrent(page) {
  current = page;
}

/// Console errors for these paths during the running check are expected, not problems.
export function allowErrors(...paths) {
  for (const p of paths) deliberate.push({ stage, path: p });
}

export function watch(page, name) {
  page.on('console', (m) => {
    const url = m.location().url || '';
    if (m.type() === 'error' && deliberate.some((d) => d.stage === stage && url.endsWith(d.path))) return;
    if (m.type() === 'error') problems.push(`${name} (during "${stage}" at ${page.url()}, ${JSON.stringify(m.location())}): console error: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`${name}: page error: ${e.message}`));
  return page;
}

export async function check(name, fn) {
  stage = name;
  try {
    await fn();
    passed += 1;
    console.log(`ok - ${name}`);
  } catch (e) {
    console.log(`not ok - ${name}\n${e.stack || e}`);
    if (current) await current.screenshot({ path: path.join(SHOTS, `${failedShot}.png`), fullPage: true }).catch(() => {});
    await context.close();
    process.exit(1);
  }
}

export function expect(cond, msg) {
  if (!cond) throw new Error(msg);
}

export async function shot(page, name) {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

/// The last check (no console errors on any watched page), then the summary line the Rust
/// side looks for.
export async function finish(what) {
  await check(what, async () => {
    expect(problems.length === 0, problems.join('\n'));
  });
  await context.close();
  console.log(`${passed} passed, 0 failed`);
}
