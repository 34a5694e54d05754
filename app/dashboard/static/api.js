// The dashboard's one way to reach keyhouse: an operation named after a file of
// frontend-queries/, fetched from keyhouse itself, so the dashboard can send no other document.

const KEY_ITEM = "keyhouse.apiKey";
const documents = new Map();
let signedOut = () => {};

export function storedKey() {
  return sessionStorage.getItem(KEY_ITEM);
}

// The key lives in this tab's sessionStorage only: never localStorage, never a cookie.
export function remember(key) {
  sessionStorage.setItem(KEY_ITEM, key);
}

// Spends a dashboard sign-in link's token for a short-lived credential, kept like a pasted key.
// Resolves to null when signed in, else to what keyhouse said about the link.
export async function useSignInLink(token) {
  const answer = await fetch("/dashboard/link", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token }),
  });
  const body = await answer.json().catch(() => ({ message: answer.statusText }));
  if (!answer.ok) return `${body.message} ${body.hint || ""}`.trim();
  remember(body.credential);
  return null;
}

export function forget() {
  sessionStorage.removeItem(KEY_ITEM);
}

export function onSignedOut(callback) {
  signedOut = callback;
}

export class ApiError extends Error {
  constructor(message, extensions = {}) {
    super(message);
    this.code = extensions.code || "ERROR";
    this.extensions = extensions;
  }

  // What a person needs to read: the missing scope, when to retry, the key's problem.
  explain() {
    const x = this.extensions;
    if (this.code === "FORBIDDEN" && x.requiredScope) {
      return `Your key lacks the scope ${x.requiredScope}. ${this.message}`;
    }
    if (this.code === "RATE_LIMITED" && x.retryAfter) {
      return `${this.message} Retry in ${x.retryAfter} seconds.`;
    }
    if (x.reason) return `${x.reason}: ${this.message}${x.hint ? ` ${x.hint}` : ""}`;
    return this.message;
  }
}

async function documentOf(operation) {
  if (!documents.has(operation)) {
    documents.set(operation, fetch(`/dashboard/queries/${operation}.graphql`).then((answer) => {
      if (!answer.ok) throw new ApiError(`No such operation: ${operation}`);
      return answer.text();
    }));
  }
  return documents.get(operation);
}

// Sends `operation` with `key` (the signed-in key unless given) and returns its data.
export async function request(operation, variables = {}, key = storedKey()) {
  const query = await documentOf(operation);
  const answer = await fetch("/graphql", {
    method: "POST",
    headers: {
      "Content-Type": "application/json",
      Accept: "application/graphql-response+json, application/json",
      "X-API-Key": key || "",
    },
    body: JSON.stringify({ query, variables, operationName: operation }),
  });
  const body = await answer.json().catch(() => ({ errors: [{ message: answer.statusText }] }));
  const error = (body.errors || [])[0];
  if (error) {
    const extensions = { ...error.extensions };
    if (answer.status === 429) extensions.retryAfter = answer.headers.get("Retry-After");
    const failure = new ApiError(error.message, extensions);
    if (answer.status === 401 && key === storedKey()) {
      forget();
      signedOut(failure.explain());
    }
    throw failure;
  }
  return body.data;
}
