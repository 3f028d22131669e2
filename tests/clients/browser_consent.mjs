// The login and consent pages in headless Chromium (Debian's, driven by
// playwright-core), as a person uses them: type the credentials, read the
// client name, redirect host and scopes on the consent page, click Allow or
// Deny, land on the client's redirect URI. Saves a screenshot of each page
// at desktop and phone width, checks each with axe-core (accessibility) and
// records console errors; ends on the error page of an ended sign-in.
// Usage: node browser_consent.mjs <authorize-url> <username> <password> <approve|deny> <screenshot-prefix>
// Prints one JSON line; on failure prints the HTTP exchanges and exits 1.
import { createServer } from "node:http";
import { chromium } from "playwright-core";
import { createRequire } from "node:module";

const axePath = createRequire(import.meta.url).resolve("axe-core/axe.min.js");

const [authorizeUrl, username, password, decision, shots] = process.argv.slice(2);
const exchanges = [];
const consoleErrors = [];

// Without the background-networking flags Chromium keeps trying to reach
// Google's hosts, which this machine's closed network refuses.
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});

try {
  // The pages' CSP allows no script at all: axe-core is injected by the
  // test with the CSP bypassed (the pages themselves need none).
  const context = await browser.newContext({ bypassCSP: true, viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  const violations = {};
  // Screenshots at desktop and phone width, and axe's serious and
  // critical findings, of the page shown now.
  const inspect = async (name) => {
    await page.screenshot({ path: `${shots}-${name}.png`, fullPage: true });
    await page.setViewportSize({ width: 390, height: 844 });
    await page.screenshot({ path: `${shots}-${name}-phone.png`, fullPage: true });
    await page.setViewportSize({ width: 1280, height: 800 });
    await page.addScriptTag({ path: axePath });
    const result = await page.evaluate(() => window.axe.run());
    violations[name] = result.violations
      .filter((v) => v.impact === "serious" || v.impact === "critical")
      .map((v) => `${v.id}: ${v.help}`);
  };
  page.on("console", (m) => m.type() === "error" && consoleErrors.push(m.text()));
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  page.on("response", (r) => exchanges.push(`${r.request().method()} ${r.url()} -> ${r.status()}`));
  // The client's loopback redirect URI, served here as a native client
  // serves it while it waits for the code.
  const redirect = new URL(new URL(authorizeUrl).searchParams.get("redirect_uri"));
  const client = createServer((req, res) => {
    res.writeHead(200, { "content-type": "text/html" }).end("<!doctype html><title>client</title><p>Back at the client.</p>");
  });
  await new Promise((ok) => client.listen(Number(redirect.port), redirect.hostname, ok));

  await page.goto(authorizeUrl);
  const loginTitle = await page.title();
  // The product's name on the gateway's page (an identity provider's own
  // login page has none).
  const product = (await page.locator("#product").count()) ? await page.locator("#product").innerText() : null;
  await inspect("1-login");
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill(password);
  await Promise.all([page.waitForURL((u) => u.pathname === "/consent"), page.getByRole("button", { name: "Sign in" }).click()]);

  const consentTitle = await page.title();
  const clientName = await page.locator("#client-name").innerText();
  const redirectHost = await page.locator("#redirect-host").innerText();
  const scopes = await page.locator("#scopes li").allInnerTexts();
  const resourceName = await page.locator("#resource-name").innerText();
  const approveFocused = await page.evaluate(() => document.activeElement?.id === "approve");
  await inspect("2-consent");
  const button = decision === "deny" ? "Deny" : "Allow";
  await Promise.all([page.waitForURL((u) => u.origin === redirect.origin), page.getByRole("button", { name: button }).click()]);
  const landedOn = page.url();
  await page.screenshot({ path: `${shots}-3-redirect.png` });
  // The page of a sign-in that has ended (a reload of the consent page):
  // its own 400 is the answer, not an error of the page.
  const before = consoleErrors.length;
  await page.goto(new URL("/consent?flow=ended", authorizeUrl).href);
  const errorPageNoise = consoleErrors.splice(before).filter(
    (m) => !/status of 400/.test(m),
  );
  consoleErrors.push(...errorPageNoise);
  const errorTitle = await page.title();
  await inspect("4-error");

  console.log(JSON.stringify({ loginTitle, consentTitle, errorTitle, product, clientName, resourceName, redirectHost, scopes, approveFocused, landedOn, violations, consoleErrors }));
  await browser.close();
  client.close();
} catch (e) {
  console.error(`FAILED: ${e.stack ?? e}\nHTTP exchanges:\n${exchanges.join("\n")}\nconsole errors:\n${consoleErrors.join("\n")}`);
  await browser.close();
  process.exit(1);
}
