"""Telling settings apart (``ddpm.compare``'s library): statistics over seeds, the comparison
figure and the comparison's W&B run, each on plain numbers."""
