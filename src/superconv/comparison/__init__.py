"""The super-convergence experiment on your own data: one-cycle against tuned baselines with longer budgets
(``runner``: which runs; ``runs``: one run and its test curve; ``speedups``: the figures; ``report``: the tables)."""
