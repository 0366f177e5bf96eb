"""Voice of the customer: what customers write and answer (surveys.py: NPS, CSAT, CES)."""
