"""Plugins shipped inside the hwdeploy distribution (registered through its own entry points)."""
