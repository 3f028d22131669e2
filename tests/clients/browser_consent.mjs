// The login and consent pages in headless Chromium (Debian's, driven by
// playwright-core), as a person uses them: type the credentials, read the
// client name, redirect host and scopes on the consent page, click Allow or
// Deny, land on the client's redirect URI. Saves a screenshot of each page
// and records console errors.
// Usage: node browser_consent.mjs <authorize-url> <username> <password> <approve|deny> <screenshot-prefix>
// Prints one JSON line; on failure prints the HTTP exchanges and exits 1.
import { createServer } from "node:http";
import { chromium } from "playwright-core";

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
  const page = await browser.newPage();
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
  await page.screenshot({ path: `${shots}-1-login.png`, fullPage: true });
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill(password);
  await Promise.all([page.waitForURL((u) => u.pathname === "/consent"), page.getByRole("button", { name: "Sign in" }).click()]);

  const consentTitle = await page.title();
  const clientName = await page.locator("#client-name").innerText();
  const redirectHost = await page.locator("#redirect-host").innerText();
  const scopes = await page.locator("#scopes li").allInnerTexts();
  await page.screenshot({ path: `${shots}-2-consent.png`, fullPage: true });
  const button = decision === "deny" ? "Deny" : "Allow";
  await Promise.all([page.waitForURL((u) => u.origin === redirect.origin), page.getByRole("button", { name: button }).click()]);
  const landedOn = page.url();
  await page.screenshot({ path: `${shots}-3-redirect.png` });

  console.log(JSON.stringify({ loginTitle, consentTitle, clientName, redirectHost, scopes, landedOn, consoleErrors }));
  await browser.close();
  client.close();
} catch (e) {
  console.error(`FAILED: ${e.stack ?? e}\nHTTP exchanges:\n${exchanges.join("\n")}\nconsole errors:\n${consoleErrors.join("\n")}`);
  await browser.close();
  process.exit(1);
}
