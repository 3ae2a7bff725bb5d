"""The foundation every stage builds on: data, models, scoring, the shared contracts and the config-to-CLI layer."""
