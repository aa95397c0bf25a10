"""The config: presets (each default's one home, the yaml) and a run's composed config."""
