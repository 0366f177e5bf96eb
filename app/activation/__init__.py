"""Acting on what the models and readers find: raising insights and the inbox (insights),
routing rules, holdouts and uplift (routing), signed webhook deliveries with every try
(deliveries), and the recurring jobs that keep scores, models and evaluations fresh
(schedules)."""
