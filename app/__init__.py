"""keyhouse: issue, scope, verify and meter API keys."""
