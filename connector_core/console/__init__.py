"""The operator console at ``/console/``: every call, what happened to it and why.

Server-rendered pages behind a login (``docs/console.md``). The modules, by what they do:
``auth`` (password hashes), ``settings`` (the ``[console]`` section), ``sessions`` (sessions,
CSRF tokens, login throttling), ``i18n`` (every UI string, Russian and English), ``filters``
(the calls page's query string and the store query it stands for), ``views`` (one function
per page returning a typed view; the calls list and one call's trace come from the read model
``connector_core.calls_view``; what only the console shows, the store's console reads),
``actions`` (retry, drop, replay), ``pages`` (the HTTP handlers), ``web`` (the sub-application
and its guards), ``links`` (the CRM object a call made), ``password_cli``.

This module imports nothing: ``config`` reads ``settings`` without pulling in the web parts.
"""
