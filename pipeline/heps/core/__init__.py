"""The bottom layer: errors, phase-tagged logging, settings, bounded YAML and schema
validation, repository paths, and the field's command-line tools. Imports nothing of heps."""
