"""Preset YAML files (configs/<kind>/<name>.yaml), a package so that installed copies ship them (core.presets)."""
