// A dashboard sign-in link (/dashboard/link/<token>): spends the link for a short-lived
// credential, kept in this tab's sessionStorage like a pasted key, then opens the dashboard.
// The link is spent by this POST, not by opening the page, so a mail scanner or a chat preview
// that fetches the address does not use it up.
import { useSignInLink } from "./api.js";

const token = decodeURIComponent(location.pathname.split("/").pop() || "");
// The token leaves the address bar and the history at once: it must not be reused or shared.
history.replaceState(null, "", "/dashboard/sign-in");

function say(message) {
  const status = document.getElementById("status");
  status.className = "error";
  status.setAttribute("role", "alert");
  status.textContent = message;
}

async function signIn() {
  try {
    const refusal = await useSignInLink(token);
    if (refusal) say(refusal);
    else location.replace("/dashboard/overview");
  } catch (failure) {
    say(`The sign-in did not complete: ${failure}`);
  }
}

signIn();
