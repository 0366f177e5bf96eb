"""The platform underneath every domain: settings, the one pool to Postgres (db) and the tables
it holds (tables, migrate, partitions), jobs and their claiming, the process's runtime and change
listener (runtime, notifications), the server and its middleware, the strict JSON reader
(jsonbody), page cursors, logs, and the one error tree (errors).

Nothing here imports a domain package, except for type annotations (runtime)."""
