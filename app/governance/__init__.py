"""Governance over everything stored: erasure, export, suppression and consent (privacy), what
is kept and for how long (retention), secrets sealed at rest (vault), the audit trail (audit),
and API keys with their scopes (auth)."""
