// Clicks through the remote-billing login in headless Chromium, the way a server's admin does:
// the email form, the confirmation mail (read from moto's SES), the Terms of Service, the
// billing page; then a second link of the same user, which skips the email step.
//
// usage: node remote-billing-login.mjs <first link> <second link> <email> <screenshot.png>
// Needs AWS_ENDPOINT_URL (moto). Chromium: $CHROMIUM or /usr/bin/chromium.
// Prints one JSON line of what it saw; exits non-zero on any failure.

import { chromium } from "playwright-core";

const [firstLink, secondLink, email, screenshot] = process.argv.slice(2);
if (!screenshot) {
  console.error("usage: node remote-billing-login.mjs <first link> <second link> <email> <screenshot.png>");
  process.exit(2);
}
const moto = process.env.AWS_ENDPOINT_URL;
if (!moto) {
  console.error("AWS_ENDPOINT_URL is not set: the confirmation mail is read from moto's SES");
  process.exit(2);
}

async function confirmationLink() {
  const deadline = Date.now() + 15000;
  while (Date.now() < deadline) {
    const state = await (await fetch(`${moto}/moto-api/data.json`)).json();
    const mails = (state.ses?.Message ?? []).filter((m) => m.destinations?.ToAddresses?.[0] === email);
    const match = mails.length ? /https?:\/\/\S+\/remote-billing-login\/do_confirm\/\S+/.exec(mails.at(-1).body) : null;
    if (match) return match[0];
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new Error(`no confirmation mail to ${email}`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
const seen = {};
try {
  const page = await (await browser.newContext()).newPage();
  page.setDefaultTimeout(15000);

  await page.goto(firstLink);
  seen.prefilled = await page.inputValue("#email");
  await page.fill("#email", email);
  await Promise.all([page.waitForURL(/\/confirm$/), page.click("#send-confirmation")]);
  seen.afterEmail = await page.textContent("h1");

  await page.goto(await confirmationLink());
  seen.termsShown = await page.isVisible("#tos_consent");
  await page.fill("#full_name", "Ada Owner");
  await page.check("#tos_consent");
  await Promise.all([page.waitForURL(/\/realm\/[0-9a-f-]+\/billing\/$/), page.click("#continue")]);
  seen.billingUrl = page.url();
  seen.plan = (await page.textContent("#plan"))?.trim();
  seen.heading = (await page.textContent("h1"))?.trim();
  await page.screenshot({ path: screenshot, fullPage: true });

  // The same user again, in a browser without the session: no email step, no terms.
  const again = await (await browser.newContext()).newPage();
  again.setDefaultTimeout(15000);
  await again.goto(secondLink);
  seen.secondLoginAsksForEmail = await again.isVisible("#email");
  seen.secondLoginShowsTerms = await again.isVisible("#tos_consent");
  await Promise.all([again.waitForURL(/\/realm\/[0-9a-f-]+\/billing\/$/), again.click("#continue")]);
  seen.secondPlan = (await again.textContent("#plan"))?.trim();
} catch (error) {
  console.error(error);
  console.log(JSON.stringify(seen));
  await browser.close();
  process.exit(1);
}
await browser.close();
console.log(JSON.stringify(seen));
