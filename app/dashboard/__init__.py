"""The browser dashboard at ``/dashboard`` and keyhouse's own GraphiQL page: files served from
the package (vendored libraries with their licences, see ``static/vendor/VENDORED.md``), and the
dashboard's GraphQL documents (``queries/``, the repository's ``frontend-queries/``).

Nothing here knows a feature: it serves files, so it imports nothing from the rest of the app.
"""
