"""The super-convergence experiment on your own data: one-cycle against tuned constant, step and cosine baselines
with longer budgets (``runner``), and the report it prints, writes and plots."""
