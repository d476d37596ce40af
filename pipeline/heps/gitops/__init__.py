"""GitOps: which pins to write (`sources`: from a run, a report, another overlay or the
history, verified in the registry), the pure edit of one file (`pin`) and of a whole
overlay (`overlay`), and the transaction that writes, commits and pushes it (`promote`)."""
