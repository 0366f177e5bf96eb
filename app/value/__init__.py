"""What the business counts: retention and revenue month by month and by signup cohort
(revenue), from the stored MRR history, outcomes and purchases; each account's lifetime value
(clv, bgnbd); which rules and actions work (effects); and whom acting helps most (uplift).
"""
