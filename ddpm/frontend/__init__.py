"""What every command shares: the command-line front end and the sweep callbacks."""
