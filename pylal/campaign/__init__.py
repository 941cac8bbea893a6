"""`pylal campaign`: refit server + LAMMPS walkers + termination + final fit + report (docs/campaign.md)."""
