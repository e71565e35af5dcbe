// Signs in through `authgate demo` in headless chromium: the app URL redirects to the
// development IdP's page, alice is chosen, and the echo upstream's page must show her
// identity and the client app; with `github`, the stand-in GitHub's page, octocat is chosen.
// Usage: node login.mjs <app-url> <expected-client> [idp|github]
import { chromium } from 'playwright-core';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [appUrl, expectedClient, provider = 'idp'] = process.argv.slice(2);
const github = provider === 'github';
const loginPage = github ? '/login/oauth/authorize' : '/authorize';
const [user, subject, expected] = github
  ? ['#gh-octocat', 'github:583231', ['github:583231', 'octocat@users.example', 'octocat', 'demo-org:billing']]
  : ['#user-alice', 'user_alice', ['user_alice', 'alice@example.com']];
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const userDataDir = mkdtempSync(join(tmpdir(), 'authgate-chromium-'));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath,
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const fail = async (why) => { console.error(why); await context.close(); process.exit(1); };
try {
  const page = await context.newPage();
  await page.goto(appUrl);
  if (!page.url().includes(loginPage)) await fail(`expected the ${provider} login page, got ${page.url()}`);
  await page.click(user);
  await page.waitForURL((u) => u.toString().startsWith(new URL(appUrl).origin) && !u.toString().includes('/_authgate/'));
  const text = await page.textContent('body');
  for (const want of [...expected, expectedClient]) {
    if (!text.includes(want)) await fail(`the echo page lacks ${want}: ${text}`);
  }
  if (text.includes('authgate=')) await fail(`the gateway's cookie reached the upstream: ${text}`);
  // The SPA endpoint answers with the session.
  const info = await page.evaluate(async () => (await fetch('/_authgate/session')).json());
  if (info.subject !== subject || info.client !== expectedClient) await fail(`session info: ${JSON.stringify(info)}`);
  if (github && (info.provider !== 'github' || info.login !== 'octocat')) await fail(`session info: ${JSON.stringify(info)}`);
  // Logout ends the session: the app sends the browser to login again.
  await page.goto(new URL('/_authgate/logout', appUrl).toString());
  await page.goto(appUrl);
  if (!page.url().includes(loginPage)) await fail(`after logout expected the login page, got ${page.url()}`);
  console.log(`browser login ok: ${expectedClient}`);
} catch (e) {
  await fail(String(e && e.stack || e));
}
await context.close();
