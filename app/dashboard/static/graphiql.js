// keyhouse's GraphiQL: everything it loads comes from keyhouse (no CDN), and this script is a
// file rather than inline so that the page runs under `script-src 'self'`.
"use strict";

(function () {
  // The dashboard puts the signed-in key here (this tab only) before linking to this page, so
  // the key never travels in a URL.
  const KEY_ITEM = "keyhouse.apiKey";
  const key = sessionStorage.getItem(KEY_ITEM);

  const welcome = `# Welcome to keyhouse's GraphiQL.
#
# Every request needs an API key. Open "Headers" below and enter:
#
#   {"X-API-Key": "kh_…your key…"}
#
# Headers stay in this page only: they are not saved in the browser unless you turn on
# "Persist headers" in the settings (the gear, bottom left).
#
# The docs (the book icon, top left) and autocomplete work without a key.

query Overview {
  organization {
    name
    keyCounts { active revoked }
  }
  apiKeys(first: 10) {
    nodes { name hint status scopes }
  }
}
`;

  const http = GraphiQL.createFetcher({ url: "/graphql" });
  // The schema is public: read from /graphql/schema.json, so the docs and autocomplete work
  // as soon as the page opens, before any key is entered.
  let schema = null;
  function introspection() {
    schema = schema || fetch("/graphql/schema.json").then((response) => response.json())
      .then((data) => ({ data }));
    return schema;
  }
  function fetcher(params, options) {
    if (params.operationName === "IntrospectionQuery") return introspection();
    return http(params, options);
  }

  // GraphiQL's editors are CodeMirror 5 instances: their input is a hidden textarea with no
  // name, and their scroll areas take no focus. Name each editor and let the keyboard reach
  // each scroll area, as GraphiQL draws them (tabs and panes come and go).
  const TOOL_EDITORS = ["Variables", "Headers"];
  function editorName(textarea) {
    if (textarea.closest(".graphiql-query-editor")) return "Query editor";
    if (textarea.closest(".result-window")) return "Response";
    const editor = textarea.closest(".graphiql-editor-tool > .graphiql-editor");
    if (!editor) return null;
    const tools = [...editor.parentElement.querySelectorAll(":scope > .graphiql-editor")];
    return TOOL_EDITORS[tools.indexOf(editor)] || null;
  }
  function makeAccessible(container) {
    for (const textarea of container.querySelectorAll(".CodeMirror textarea:not([aria-label])")) {
      const name = editorName(textarea);
      if (name) textarea.setAttribute("aria-label", name);
    }
    for (const scroll of container.querySelectorAll(".CodeMirror-scroll[tabindex=\"-1\"]")) {
      scroll.setAttribute("tabindex", "0");
    }
  }

  const container = document.getElementById("graphiql");
  new MutationObserver(() => makeAccessible(container))
    .observe(container, { childList: true, subtree: true });
  const root = ReactDOM.createRoot(container);
  root.render(
    React.createElement(GraphiQL, {
      fetcher,
      defaultQuery: welcome,
      headers: key ? JSON.stringify({ "X-API-Key": key }, null, 2) : undefined,
      shouldPersistHeaders: false,
      defaultEditorToolsVisibility: "headers",
    }),
  );
})();
