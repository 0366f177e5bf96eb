"""What the business counts: retention and revenue month by month and by signup cohort
(revenue), from the stored MRR history, outcomes and purchases."""
