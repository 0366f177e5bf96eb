"""Signals in: the one ingest context every door builds and the storing of events and outcomes
(ingest), the Segment Tracking API (segment), and the signed webhooks of billing, support and
CRM senders (sources/: each sender module verifies and maps; the package lands)."""
