// Clicks through remote billing in headless Chromium, the way a server's admin does: the email
// form, the confirmation mail (read from moto's SES), the Terms of Service, the billing page;
// the plans page, the upgrade form, Stripe's (sandbox) Checkout page, and the billing page with
// the plan bought; then a second link of the same user, which skips the email step. Each page
// is screenshotted into the artifacts directory.
//
// usage: node remote-billing-login.mjs <first link> <second link> <email> <artifacts dir>
// Needs AWS_ENDPOINT_URL (moto). Chromium: $CHROMIUM or /usr/bin/chromium.
// Prints one JSON line of what it saw; exits non-zero on any failure.

import { chromium } from "playwright-core";

const [firstLink, secondLink, email, artifacts] = process.argv.slice(2);
if (!artifacts) {
  console.error("usage: node remote-billing-login.mjs <first link> <second link> <email> <artifacts dir>");
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
  seen.noPlan = await page.isVisible("#no-plan");
  seen.heading = (await page.textContent("h1"))?.trim();
  await page.screenshot({ path: `${artifacts}/remote-billing-page.png`, fullPage: true });

  // Plans, then the upgrade form, then Stripe's Checkout, then back on the billing page.
  await page.click("a[href$='/plans/']");
  await page.waitForURL(/\/plans\/$/);
  seen.basicMonthly = (await page.textContent("#tier-basic td:nth-of-type(1)"))?.trim();
  await page.screenshot({ path: `${artifacts}/plans-page.png`, fullPage: true });
  await Promise.all([page.waitForURL(/\/upgrade\/$/), page.click("#go-upgrade")]);
  await page.check("#tier-basic");
  await page.check("#schedule-monthly");
  await page.check("#license_management-automatic");
  seen.upgradeLabelled = (await page.locator("label[for=licenses]").count()) === 1;
  await page.screenshot({ path: `${artifacts}/upgrade-page.png`, fullPage: true });
  await Promise.all([page.waitForURL(/\/checkout\/cs_test_/), page.click("#upgrade")]);
  seen.checkoutHeading = (await page.textContent("h1"))?.trim();
  await page.screenshot({ path: `${artifacts}/checkout-page.png`, fullPage: true });
  await page.fill("#payment_method", "pm_card_visa");
  await Promise.all([page.waitForURL(/\/realm\/[0-9a-f-]+\/billing\/$/), page.click("#save-card")]);
  seen.afterCheckoutUrl = page.url();
  // The webhook carrying the upgrade through may land after the browser is back.
  const deadline = Date.now() + 60000;
  while (!(await page.isVisible("#plan-tier"))) {
    if (Date.now() > deadline) throw new Error("the plan never appeared on the billing page");
    await new Promise((resolve) => setTimeout(resolve, 500));
    await page.reload();
  }
  seen.planTier = (await page.textContent("#plan-tier"))?.trim();
  seen.card = (await page.textContent("#plan-card"))?.trim();
  await page.screenshot({ path: `${artifacts}/billing-with-plan.png`, fullPage: true });

  // The same user again, in a browser without the session: no email step, no terms.
  const again = await (await browser.newContext()).newPage();
  again.setDefaultTimeout(15000);
  await again.goto(secondLink);
  seen.secondLoginAsksForEmail = await again.isVisible("#email");
  seen.secondLoginShowsTerms = await again.isVisible("#tos_consent");
  await Promise.all([again.waitForURL(/\/realm\/[0-9a-f-]+\/billing\/$/), again.click("#continue")]);
  seen.secondPlan = (await again.textContent("#plan-tier"))?.trim();
} catch (error) {
  console.error(error);
  console.log(JSON.stringify(seen));
  await browser.close();
  process.exit(1);
}
await browser.close();
console.log(JSON.stringify(seen));
