"""The demo: a simulated B2B SaaS with planted causes (simulator), and `custintel demo`'s tour
that sends it through the HTTP API, trains, scores and prints what to do next (tour)."""
