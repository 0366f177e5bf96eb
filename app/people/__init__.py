"""People and accounts: accounts and contacts with their history (profiles), one owner per
identifier (identities), merges that move history and keep old ids resolving (merges), what
happened to an account in order (timeline), and the one rule that lands signals held for want
of an identity (held)."""
