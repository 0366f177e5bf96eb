"""The console for the people who act, served under /app/ by the same app: its users with
roles and their sign-in (users), the book ranked by value at risk (book), the account with what
changed (account), small server-drawn charts (charts), the pages (pages), and the Jinja2
templates and vendored static files (htmx) beside them. Pages read with JavaScript off; htmx
only swaps parts of a page in place."""
